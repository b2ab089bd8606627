// Part of the xl book (not vendored). Loaded after require.js and before embed-amd.js.
// embed-amd.js defines its AMD modules itself; webpack inside it derives the URL of
// its assets (Font Awesome fonts) from each module's RequireJS path, which by default
// is relative to the *page*. Point the @jupyter-widgets modules at this folder so the
// fonts are fetched from _static/widgets/ wherever the page is (no CDN, no 404s).
(function () {
  var script = document.currentScript;
  var here = script && script.src ? script.src.replace(/[?#].*$/, "").replace(/[^/]*$/, "") : "_static/widgets/";
  var dir = here.replace(/\/$/, "");
  window.requirejs.config({
    paths: {
      "@jupyter-widgets/html-manager/dist": dir,
      "@jupyter-widgets": dir
    }
  });
})();

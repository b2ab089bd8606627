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

// embed-amd.js typesets widget labels with MathJax 2's call, MathJax.Hub.Queue(["Typeset", MathJax.Hub, el]),
// whenever window.MathJax exists; the book loads MathJax 3 (book/_static/mathjax), which has no Hub. Give
// the MathJax 3 object that call, forwarded to its typesetPromise. This file runs before MathJax (a
// deferred script), so catch the moment MathJax 3 replaces its configuration in window.MathJax.
(function () {
  function withHub(mathjax) {
    if (mathjax && mathjax.version && !mathjax.Hub) {
      mathjax.Hub = {Queue: function (job) {
        var element = job && job[2];
        if (mathjax.typesetPromise) {
          mathjax.typesetPromise(element ? [element] : undefined).catch(function () {});
        }
      }};
    }
    return mathjax;
  }
  if (window.MathJax !== undefined && window.MathJax.version) {  // MathJax 3 is there already
    withHub(window.MathJax);
    return;
  }
  var current = window.MathJax;  // undefined, or the configuration the page gives MathJax 3
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); }
  });
})();

"""Stage 0, what every stage uses: errors, atomic files, folders, disk caches, presets, hub reachability,
results tables, tensor helpers. `presets` names languages and models, so it reads two leaf tables of later
stages (xl.data.languages, xl.models.registry), which import nothing but this stage."""

"""The recipe-neutral pipeline: typed steps, registered step kinds, the runner, the report.

* ``step``    — ``Step``, ``Ref`` (a named output of another step), ``Publish``, ``StepKind``
  and the kind registry (pure);
* ``kinds``   — the built-in kinds: ingest, split, mix, train, backtranslate, curate,
  evaluate (pure; runners named by path);
* ``plan``    — ``Plan``: add steps, resolve references, chain fingerprints (pure);
* ``recipe``  — ``Recipe`` and ``RecipeConfig``: what a recipe gives the pipeline (pure);
* ``execute`` — the built-in kinds' runners; ``runner`` — skip / resume / redo steps,
  publish models; ``report`` + ``html`` — the generic report and the recipe's sections.

Nothing here knows any recipe: recipes live in ``selfalign.recipes``.
"""

"""selfalign: generation, scoring and curation of training data with the model being
aligned, on Ray Data + vLLM, Ray Train + DeepSpeed and Ray Serve.

Layers, top to bottom (imports only point down; ``make lint`` checks it): ``cli`` ->
``serving`` -> ``recipes`` -> ``pipeline`` -> ``evaluation`` -> ``stages`` | ``training``
-> ``engine`` | ``formats`` -> ``core``. See the README's "Architecture".
"""

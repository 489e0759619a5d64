"""Transfer Lab's engine: reuse a pretrained convnet on a small image dataset.

Deep Learning with Python, section 5.3, as a library: datasets, backbones, the feature cache,
the freezing strategies, training runs, evaluation and prediction. No Streamlit in here.
"""

__version__ = "0.1.0"

from setuptools import setup

setup(
    name="cbcn-tf",
    version="0.1.0",
    description="Circulant Binary Convolutional Networks (CVPR 2019) for Keras 2 / Larq, "
    "with Larq Compute Engine export.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=["cbcn_tf", "cbcn_tf.data", "cbcn_tf.training", "cbcn_tf.models",
              "cbcn_tf.converters"],
    package_dir={
        "cbcn_tf": "cbcn_tf",
        "cbcn_tf.models": "models",
        "cbcn_tf.converters": "converters",
    },
    package_data={
        "cbcn_tf": ["recipes/*.yaml", "demo_spread.json"],
        # Trained weights (models/pretrained.py), written by benchmarks/package_weights.py.
        "cbcn_tf.models": ["weights/*.json", "weights/*.h5", "weights/*.tflite"],
    },
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tf-keras>=2.16,<2.22",
        "larq>=0.13.3,<0.15",
        "larq-compute-engine>=0.16,<0.17",
        "tensorflow-datasets>=4.9,<5",
        # What the defaults use: TensorFlow 2.21 no longer installs TensorBoard (the recipes'
        # `tensorboard: true`), and TFDS 4.9.10's builders import importlib_resources.
        "tensorboard>=2.16,<2.22",
        "importlib_resources>=5",
        "numpy>=1.23,<2",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "pyyaml>=6",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "ruff"],
        "dev": ["pytest>=7", "pytest-xdist>=3", "ruff"],
    },
    entry_points={"console_scripts": ["cbcn=cbcn_tf.cli:main"]},
)

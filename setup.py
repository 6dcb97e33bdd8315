from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tf_lottery",
    version="0.2.0",
    description="Lottery-ticket iterative magnitude pruning with rewinding for Keras 3 and "
                "tf_keras models (TF-MOT for tf_keras), exported as sparse SavedModels and "
                "TFLite",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_lottery", "tf_lottery.*"]),
    python_requires=">=3.10,<3.13",
    # Tested together: TF 2.21, Keras 3.15, tf-keras 2.21, TF-MOT 0.8.1, TensorBoard 2.21,
    # LiteRT 2.3, JAX 0.10 (Python 3.11).
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "tf-keras>=2.21,<2.22",
        "tensorflow-model-optimization>=0.8.1,<0.9",
        "tensorboard>=2.21,<2.22",
        "ai-edge-litert>=2.1,<3",
        "numpy>=1.26",
        "pyyaml>=6",
        "matplotlib>=3.8",
    ],
    entry_points={"console_scripts": ["tf-lottery=tf_lottery.cli:main"]},
    extras_require={
        "jax": ["jax[cpu]>=0.4.30"],  # Keras 3's JAX backend
        "ray": ["ray>=2.50,<3"],  # executor="ray": a search's trainings as Ray tasks
        "test": ["pytest>=8", "jax[cpu]>=0.4.30", "ray>=2.50,<3", "ruff>=0.6",
                 "import-linter>=2.1"],
    },
)

"""The paper's datasets (IDX and CIFAR-10 files, checksummed) and architectures."""

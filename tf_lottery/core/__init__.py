"""The plain-data core of IMP: masks and the criteria that choose them, the round schedule,
rewind policies, the IMP settings and the controls. NumPy only: no Keras, no engine."""

//! CRIU action script: locks a backend at checkpoint, repoints and unlocks it at restore.

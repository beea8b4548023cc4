//! Near-duplicate and repeated-substring detection (being written).

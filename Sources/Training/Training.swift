// Training module (being written).

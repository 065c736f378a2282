// Model module (being written).

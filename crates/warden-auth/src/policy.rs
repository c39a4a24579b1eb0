//! Cedar policies (being written).

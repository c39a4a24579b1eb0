//! API keys (being written).

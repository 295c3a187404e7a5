//! Placeholder: filled in by the paid-wire work.

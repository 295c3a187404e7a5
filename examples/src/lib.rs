//! Sample paid BitTorrent client (filled in by the examples issue).

#![forbid(unsafe_code)]

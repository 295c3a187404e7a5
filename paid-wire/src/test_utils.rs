//! Test support shared by this crate's tests and the fuzz targets (feature `test-utils`). Not part
//! of the API; no semver promise.

/// Whether `bendy` (a reference bencode implementation) accepts `input` as exactly one canonical
/// bencode value, nested at most `max_depth` deep: the differential oracle of our bounded decoder.
pub fn bendy_canonical(input: &[u8], max_depth: usize) -> bool {
    use bendy::decoding::{Decoder, Object};
    let mut decoder = Decoder::new(input).with_max_depth(max_depth);
    let first_ok = match decoder.next_object() {
        Ok(Some(Object::Dict(d))) => d.into_raw().is_ok(),
        Ok(Some(Object::List(l))) => l.into_raw().is_ok(),
        Ok(Some(_)) => true,
        _ => false,
    };
    first_ok && matches!(decoder.next_object(), Ok(None))
}

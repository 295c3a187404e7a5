//! BEP 10 extended handshake and extension-id registry.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use paid_wire::bencode::Value;
use paid_wire::error::{BencodeError, ExtendedError, UsageError};
use paid_wire::extended::{ExtendedHandshake, ExtensionIds, HANDSHAKE_LIMITS};
use paid_wire::message::Message;
use paid_wire::pse::EXTENSION_NAME;
use paid_wire::test_utils::bendy_canonical;
use proptest::prelude::*;

/// The example from BEP 10 ("µ" is UTF-8, two bytes, so `v` is 13 bytes long).
const BEP10_EXAMPLE: &[u8] =
    b"d1:md11:LT_metadatai1e6:ut_pexi2ee1:pi6881e1:v13:\xc2\xb5Torrent 1.2e";

/// What web3torrent (webtorrent in the browser) sends: ut_metadata is id 1, the PSE id 2, plus
/// the two PSE keys and BEP 9 `metadata_size`.
const WEB3TORRENT: &[u8] = b"d1:md22:paidStreamingExtensioni2e11:ut_metadatai1ee\
13:metadata_sizei12345e\
14:outcomeAddress42:0x8dc5Ad7A0fC0fe1e9eE36A5d4C5C9EE2D7AF3eEc\
10:pseAccount42:0x7F0126D6c4270498b6514Cb934a3274898f68777e";

#[test]
fn bep10_example() {
    let hs = ExtendedHandshake::decode(BEP10_EXAMPLE).unwrap();
    assert_eq!(hs.m.get("LT_metadata"), Some(&1));
    assert_eq!(hs.m.get("ut_pex"), Some(&2));
    assert_eq!(hs.p, Some(6881));
    assert_eq!(hs.v.as_deref(), Some("µTorrent 1.2"));
    assert!(hs.extra.is_empty());
    assert_eq!(hs.to_bytes(), BEP10_EXAMPLE);
    assert_eq!(hs.extension_id("ut_pex"), Some(2));
    assert_eq!(hs.extension_id("nope"), None);
}

#[test]
fn web3torrent_keys_round_trip() {
    let hs = ExtendedHandshake::decode(WEB3TORRENT).unwrap();
    assert_eq!(hs.extension_id(EXTENSION_NAME), Some(2));
    assert_eq!(hs.metadata_size, Some(12345));
    assert_eq!(
        hs.pse_account(),
        Some(&b"0x7F0126D6c4270498b6514Cb934a3274898f68777"[..])
    );
    assert_eq!(
        hs.outcome_address(),
        Some(&b"0x8dc5Ad7A0fC0fe1e9eE36A5d4C5C9EE2D7AF3eEc"[..])
    );
    assert_eq!(hs.to_bytes(), WEB3TORRENT);

    // Built from scratch, it encodes to the same bytes.
    let mut ours = ExtendedHandshake::new();
    ours.m.insert("ut_metadata".into(), 1);
    ours.m.insert(EXTENSION_NAME.into(), 2);
    ours.metadata_size = Some(12345);
    ours.set_pse_account("0x7F0126D6c4270498b6514Cb934a3274898f68777");
    ours.set_outcome_address(&b"0x8dc5Ad7A0fC0fe1e9eE36A5d4C5C9EE2D7AF3eEc"[..]);
    assert_eq!(ours.to_bytes(), WEB3TORRENT);
    assert_eq!(
        ours.to_message(),
        Message::Extended {
            id: 0,
            payload: Bytes::from_static(WEB3TORRENT)
        }
    );
}

#[test]
fn all_typed_fields_and_unknown_keys() {
    let raw = b"d12:complete_agoi-1e1:md6:ut_pexi0ee13:metadata_sizei0e1:pi0e4:reqqi2000e\
11:upload_onlyi1e1:v0:6:yourip4:\x7f\x00\x00\x01e";
    let hs = ExtendedHandshake::decode(raw).unwrap();
    assert_eq!(hs.m.get("ut_pex"), Some(&0));
    assert_eq!(hs.extension_id("ut_pex"), None, "0 means disabled");
    assert_eq!(hs.reqq, Some(2000));
    assert_eq!(hs.p, Some(0));
    assert_eq!(hs.v.as_deref(), Some(""));
    assert_eq!(hs.yourip_addr(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(hs.extra.get(&b"upload_only"[..]), Some(&Value::Int(1)));
    assert_eq!(hs.extra.get(&b"complete_ago"[..]), Some(&Value::Int(-1)));
    assert_eq!(&hs.to_bytes()[..], &raw[..]);
}

#[test]
fn unsorted_keys_are_accepted_and_reencoded_sorted() {
    // `v` before `m`, and `ut_pex` before `LT_metadata`.
    let unsorted = b"d1:v3:abc1:md6:ut_pexi2e11:LT_metadatai1eee";
    let hs = ExtendedHandshake::decode(unsorted).unwrap();
    assert_eq!(hs.v.as_deref(), Some("abc"));
    assert_eq!(hs.m.len(), 2);
    assert_eq!(
        &hs.to_bytes()[..],
        b"d1:md11:LT_metadatai1e6:ut_pexi2ee1:v3:abce"
    );
}

#[test]
fn duplicate_keys_are_rejected() {
    assert_eq!(
        ExtendedHandshake::decode(b"d1:pi1e1:pi2ee"),
        Err(ExtendedError::Bencode(BencodeError::DuplicateKey {
            offset: 7
        }))
    );
    // Also inside `m`, even when unsorted.
    assert!(matches!(
        ExtendedHandshake::decode(b"d1:md1:bi1e1:ai2e1:bi3eee"),
        Err(ExtendedError::Bencode(BencodeError::DuplicateKey { .. }))
    ));
}

#[test]
fn bounds_are_enforced() {
    let mut big = b"d1:x65536:".to_vec();
    big.resize(big.len() + 65536, b'a');
    big.push(b'e');
    assert!(matches!(
        ExtendedHandshake::decode(&big),
        Err(ExtendedError::Bencode(BencodeError::TooLarge {
            max: 65536,
            ..
        }))
    ));
    let deep = format!("d1:x{}{}e", "l".repeat(8), "e".repeat(8));
    assert_eq!(
        ExtendedHandshake::decode(deep.as_bytes()),
        Err(ExtendedError::Bencode(BencodeError::TooDeep { max: 8 }))
    );
    let ok = format!("d1:x{}{}e", "l".repeat(7), "e".repeat(7));
    assert!(ExtendedHandshake::decode(ok.as_bytes()).is_ok());
    let many = format!("d1:xl{}ee", "i0e".repeat(HANDSHAKE_LIMITS.max_items));
    assert_eq!(
        ExtendedHandshake::decode(many.as_bytes()),
        Err(ExtendedError::Bencode(BencodeError::TooManyItems {
            max: 1024
        }))
    );
    assert_eq!(
        ExtendedHandshake::decode(b"dei0e"),
        Err(ExtendedError::Bencode(BencodeError::TrailingBytes {
            count: 3
        }))
    );
}

#[test]
fn malformed_handshakes_are_typed_errors() {
    let invalid = |key| ExtendedError::InvalidField { key };
    let cases: [(&[u8], ExtendedError); 6] = [
        (b"le", ExtendedError::NotADict),
        (b"d1:pi70000ee", invalid("p")),
        (b"d4:reqqi-1ee", invalid("reqq")),
        (b"d1:m3:abce", invalid("m")),
        (b"d1:vi1ee", invalid("v")),
        (b"d1:v1:\xffe", invalid("v")),
    ];
    common::assert_decode_errors(ExtendedHandshake::decode, cases);
    assert!(ExtendedHandshake::decode(b"").is_err());
    assert!(ExtendedHandshake::decode(b"d").is_err());
}

#[test]
fn unusable_m_entries_are_ignored() {
    let hs = ExtendedHandshake::decode(b"d1:md1:ai300e1:bi-1e1:c1:x1:di3e1:\xffi4eee").unwrap();
    assert_eq!(hs.m.len(), 1);
    assert_eq!(hs.m.get("d"), Some(&3));
}

#[test]
fn extension_ids_keep_ours_and_theirs_apart() {
    let mut ids = ExtensionIds::new();
    ids.set_local("ut_metadata", 1).unwrap();
    ids.set_local(EXTENSION_NAME, 3).unwrap();
    assert_eq!(ids.set_local("other", 0), Err(UsageError::ExtensionIdZero));
    assert_eq!(
        ids.set_local("other", 3),
        Err(UsageError::ExtensionIdInUse { id: 3 })
    );
    assert_eq!(ids.local_handshake().m, *ids.local());

    // Nothing may be sent before the peer advertises the name.
    assert_eq!(ids.peer_id(EXTENSION_NAME), None);

    let first = ExtendedHandshake::decode(WEB3TORRENT).unwrap();
    ids.apply_peer_handshake(&first);
    assert_eq!(ids.peer_id(EXTENSION_NAME), Some(2)); // we send with theirs
    assert_eq!(ids.local_id(EXTENSION_NAME), Some(3)); // they send with ours
    assert_eq!(ids.local_name(3), Some(EXTENSION_NAME));
    assert_eq!(ids.local_name(2), None);

    // A later handshake is additive: it only carries changes.
    let mut update = ExtendedHandshake::new();
    update.m.insert("ut_pex".into(), 7);
    update.m.insert("ut_metadata".into(), 0);
    ids.apply_peer_handshake(&update);
    assert_eq!(ids.peer_id("ut_pex"), Some(7));
    assert_eq!(ids.peer_id("ut_metadata"), None, "0 disables");
    assert_eq!(ids.peer_id(EXTENSION_NAME), Some(2), "untouched");

    // Re-enabled later with a new id.
    let mut again = ExtendedHandshake::new();
    again.m.insert("ut_metadata".into(), 9);
    ids.apply_peer_handshake(&again);
    assert_eq!(ids.peer_id("ut_metadata"), Some(9));
    assert_eq!(ids.peer().len(), 3);
}

/// bendy accepts the input as exactly one canonical value.
fn bendy_accepts(input: &[u8]) -> bool {
    bendy_canonical(input, HANDSHAKE_LIMITS.max_depth)
}

#[test]
fn bendy_agrees_on_fixtures() {
    assert!(bendy_accepts(BEP10_EXAMPLE));
    assert!(bendy_accepts(WEB3TORRENT));
    assert!(!bendy_accepts(b"d1:v3:abc1:md6:ut_pexi2eee"));
}

proptest! {
    #[test]
    fn ext_handshake_round_trip(hs in common::ext_handshake()) {
        let bytes = hs.to_bytes();
        prop_assert!(bendy_accepts(&bytes), "not canonical: {:?}", bytes);
        prop_assert_eq!(ExtendedHandshake::decode(&bytes).unwrap(), hs);
    }

    #[test]
    fn value_round_trip_and_canonical(v in common::value()) {
        let bytes = v.to_vec();
        prop_assert_eq!(bytes.len(), v.encoded_len());
        prop_assert!(bendy_accepts(&bytes));
        prop_assert_eq!(Value::decode(&bytes, &HANDSHAKE_LIMITS).unwrap(), v);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_agree_with_bendy(
        data in proptest::collection::vec(any::<u8>(), 0..128)
    ) {
        let _ = ExtendedHandshake::decode(&data);
        let ours = Value::decode(&data, &HANDSHAKE_LIMITS);
        if let Ok(v) = &ours
            && bendy_accepts(&data)
        {
            prop_assert_eq!(v.to_vec(), data);
        }
    }
}

#[test]
fn input_whose_reencoding_exceeds_the_bounds_is_rejected() {
    // 1024 items without `m`: re-encoding adds `m` (1025 items).
    let full = format!("d1:xl{}ee", "0:".repeat(HANDSHAKE_LIMITS.max_items - 1));
    assert!(Value::decode(full.as_bytes(), &HANDSHAKE_LIMITS).is_ok());
    assert_eq!(
        ExtendedHandshake::decode(full.as_bytes()),
        Err(ExtendedError::Bencode(BencodeError::TooManyItems {
            max: 1024
        }))
    );
    let with_m = format!(
        "d1:mde1:xl{}ee",
        "0:".repeat(HANDSHAKE_LIMITS.max_items - 2)
    );
    let hs = ExtendedHandshake::decode(with_m.as_bytes()).unwrap();
    assert_eq!(&hs.to_bytes()[..], with_m.as_bytes());
}

/// A peer that sends handshake after handshake, each with new names, grows nothing beyond the
/// names we speak ourselves.
#[test]
fn only_known_extension_names_are_kept() {
    let mut ids = ExtensionIds::new();
    ids.set_local(EXTENSION_NAME, 3).unwrap();
    for i in 0..1_000u32 {
        let mut hs = ExtendedHandshake::new();
        hs.m.insert(format!("junk-{i}"), 5);
        hs.m.insert(EXTENSION_NAME.into(), 2);
        ids.apply_peer_handshake_known(&hs);
    }
    assert_eq!(ids.peer().len(), 1);
    assert_eq!(ids.peer_id(EXTENSION_NAME), Some(2));
    let mut off = ExtendedHandshake::new();
    off.m.insert(EXTENSION_NAME.into(), 0);
    ids.apply_peer_handshake_known(&off);
    assert_eq!(ids.peer_id(EXTENSION_NAME), None);
    // The `pseAuth` key round-trips.
    let mut hs = ExtendedHandshake::new();
    hs.set_pse_auth(Some(1));
    let back = ExtendedHandshake::decode(&hs.to_bytes()).unwrap();
    assert_eq!(back.pse_auth(), Some(1));
    hs.set_pse_auth(None);
    assert_eq!(hs.pse_auth(), None);
}

//! BEP 9 `ut_metadata`: message codec, serving and assembling.

mod common;

use bytes::Bytes;
use paid_wire::error::{BencodeError, MetadataError};
use paid_wire::message::Message;
use paid_wire::metadata::{
    MAX_METADATA_SIZE, MetadataDownload, MetadataMessage, PIECE_LEN, Progress, piece_count, serve,
};
use proptest::prelude::*;

/// The examples of BEP 9, byte for byte (the data message with a 2-byte stand-in piece).
#[test]
fn bep9_examples() {
    let cases: [(&[u8], MetadataMessage); 3] = [
        (
            b"d8:msg_typei0e5:piecei0ee",
            MetadataMessage::Request { piece: 0 },
        ),
        (
            b"d8:msg_typei1e5:piecei0e10:total_sizei34256eexx",
            MetadataMessage::Data {
                piece: 0,
                total_size: 34256,
                data: Bytes::from_static(b"xx"),
            },
        ),
        (
            b"d8:msg_typei2e5:piecei0ee",
            MetadataMessage::Reject { piece: 0 },
        ),
    ];
    for (wire, msg) in cases {
        assert_eq!(MetadataMessage::decode(wire).as_ref(), Ok(&msg));
        assert_eq!(msg.encode(), wire);
    }
}

#[test]
fn unsorted_and_unknown_keys_are_accepted() {
    assert_eq!(
        MetadataMessage::decode(b"d5:piecei3e1:xi9e8:msg_typei0ee"),
        Ok(MetadataMessage::Request { piece: 3 })
    );
}

/// Every malformed message gets its typed error; none panics.
#[test]
fn malformed_messages_are_typed_errors() {
    let big_piece = {
        let mut m = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        m.extend(vec![0; PIECE_LEN + 1]);
        m
    };
    use MetadataError as E;
    let (missing, invalid) = (|key| E::MissingField { key }, |key| E::InvalidField { key });
    let trailing = |count| E::TrailingData { count };
    let cases: Vec<(&[u8], MetadataError)> = vec![
        (b"", E::Bencode(BencodeError::UnexpectedEof)),
        (b"li0ee", E::NotADict),
        (b"d5:piecei0ee", missing("msg_type")),
        (b"d8:msg_typei0ee", missing("piece")),
        (b"d8:msg_typei0e5:piecei-1ee", invalid("piece")),
        (b"d8:msg_typei0e5:piece1:0e", invalid("piece")),
        (b"d8:msg_typei1e5:piecei0ee", missing("total_size")),
        (
            b"d8:msg_typei1e5:piecei0e10:total_sizei-5ee",
            invalid("total_size"),
        ),
        (b"d8:msg_typei0e5:piecei0eeX", trailing(1)),
        (b"d8:msg_typei2e5:piecei0eeXY", trailing(2)),
        (
            b"d8:msg_typei7e5:piecei0ee",
            E::UnknownMessageType { msg_type: 7 },
        ),
        (&big_piece, E::PieceTooLarge { len: PIECE_LEN + 1 }),
        (
            b"d8:msg_typei0e5:piecei0e8:msg_typei0ee",
            E::Bencode(BencodeError::DuplicateKey { offset: 24 }),
        ),
    ];
    common::assert_decode_errors(MetadataMessage::decode, cases);
}

#[test]
fn a_dictionary_larger_than_the_header_limit_is_refused() {
    let mut m = b"d8:msg_typei0e5:piecei0e1:z600:".to_vec();
    m.extend(vec![b'a'; 600]);
    m.push(b'e');
    assert!(matches!(
        MetadataMessage::decode(&m),
        Err(MetadataError::Bencode(BencodeError::TooLarge { .. }))
    ));
}

#[test]
fn serving_answers_every_piece_and_rejects_past_the_end() {
    let info: Vec<u8> = (0..(2 * PIECE_LEN + 100)).map(|i| i as u8).collect();
    assert_eq!(piece_count(info.len() as u64), 3);
    for (piece, len) in [(0u32, PIECE_LEN), (1, PIECE_LEN), (2, 100)] {
        let MetadataMessage::Data {
            piece: p,
            total_size,
            data,
        } = serve(&info, piece)
        else {
            panic!("piece {piece} rejected");
        };
        assert_eq!((p, total_size, data.len()), (piece, info.len() as u64, len));
        let start = piece as usize * PIECE_LEN;
        assert_eq!(&data[..], &info[start..start + len]);
    }
    for piece in [3, u32::MAX] {
        assert_eq!(serve(&info, piece), MetadataMessage::Reject { piece });
    }
    // An exact multiple of the piece length has no short last piece.
    let exact = vec![1u8; PIECE_LEN];
    assert_eq!(piece_count(PIECE_LEN as u64), 1);
    assert_eq!(serve(&exact, 1), MetadataMessage::Reject { piece: 1 });
}

#[test]
fn download_refuses_sizes_out_of_range() {
    for size in [0, MAX_METADATA_SIZE + 1, u64::MAX] {
        assert_eq!(
            MetadataDownload::new(size),
            Err(MetadataError::SizeOutOfRange { size })
        );
    }
    assert_eq!(
        MetadataDownload::new(MAX_METADATA_SIZE)
            .unwrap()
            .piece_count(),
        1024
    );
}

#[test]
fn download_checks_each_answer_against_the_metadata() {
    let info = vec![7u8; PIECE_LEN + 10];
    let mut d = MetadataDownload::new(info.len() as u64).unwrap();
    let data = |piece, total_size, len| MetadataMessage::Data {
        piece,
        total_size,
        data: Bytes::from(vec![7u8; len]),
    };
    let size = info.len() as u64;
    let cases = [
        (
            data(2, size, 10),
            MetadataError::PieceOutOfRange { piece: 2, count: 2 },
        ),
        (
            data(0, size + 1, PIECE_LEN),
            MetadataError::TotalSizeMismatch {
                expected: size,
                got: size + 1,
            },
        ),
        (
            data(1, size, 11),
            MetadataError::PieceLength {
                piece: 1,
                expected: 10,
                got: 11,
            },
        ),
        (
            data(0, size, 10),
            MetadataError::PieceLength {
                piece: 0,
                expected: PIECE_LEN,
                got: 10,
            },
        ),
    ];
    for (msg, err) in cases {
        assert_eq!(d.handle(msg), Err(err));
    }
    assert_eq!(
        d.handle(MetadataMessage::Reject { piece: 1 }),
        Ok(Progress::Rejected(1))
    );
    assert_eq!(
        d.handle(MetadataMessage::Request { piece: 0 }),
        Ok(Progress::Pending)
    );
    assert_eq!(d.handle(serve(&info, 1)), Ok(Progress::Pending));
    assert_eq!(
        d.handle(serve(&info, 0)),
        Ok(Progress::Complete(info.clone()))
    );
}

#[test]
fn reset_asks_for_every_piece_again() {
    let info = vec![1u8; 3 * PIECE_LEN];
    let mut d = MetadataDownload::new(info.len() as u64).unwrap();
    let asked = |d: &mut MetadataDownload| {
        std::iter::from_fn(|| d.next_request())
            .map(|r| r.piece())
            .collect::<Vec<_>>()
    };
    assert_eq!(asked(&mut d), [0, 1, 2]);
    assert_eq!(asked(&mut d), Vec::<u32>::new());
    for p in 0..2 {
        d.handle(serve(&info, p)).unwrap();
    }
    d.reset();
    assert_eq!(asked(&mut d), [0, 1, 2]);
    for p in 0..2 {
        assert_eq!(d.handle(serve(&info, p)), Ok(Progress::Pending));
    }
    assert_eq!(d.handle(serve(&info, 2)), Ok(Progress::Complete(info)));
}

#[test]
fn to_message_uses_the_peers_id() {
    let msg = MetadataMessage::Request { piece: 1 }.to_message(9);
    let Message::Extended { id, payload } = msg else {
        panic!("not extended");
    };
    assert_eq!(id, 9);
    assert_eq!(&payload[..], b"d8:msg_typei0e5:piecei1ee");
}

fn message() -> impl Strategy<Value = MetadataMessage> {
    prop_oneof![
        any::<u32>().prop_map(|piece| MetadataMessage::Request { piece }),
        any::<u32>().prop_map(|piece| MetadataMessage::Reject { piece }),
        (
            any::<u32>(),
            0..=i64::MAX as u64,
            proptest::collection::vec(any::<u8>(), 0..=PIECE_LEN)
        )
            .prop_map(|(piece, total_size, data)| MetadataMessage::Data {
                piece,
                total_size,
                data: data.into()
            }),
    ]
}

proptest! {
    #[test]
    fn round_trip(msg in message()) {
        prop_assert_eq!(MetadataMessage::decode(&msg.encode()), Ok(msg));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(msg) = MetadataMessage::decode(&bytes) {
            prop_assert_eq!(MetadataMessage::decode(&msg.encode()), Ok(msg));
        }
    }
}

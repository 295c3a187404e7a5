//! Wire messages between the payer and the payee, and their compact JSON form.
//!
//! Messages travel as a JSON string inside the BEP-10 paid-streaming extension's `message`
//! command, wrapped in web3torrent's client-api-schema envelope `{recipient, sender, data}`
//! ([`Envelope`]); `recipient` and `sender` are the participants' signing addresses, and a receiver
//! drops an envelope whose `recipient` is not its own address.
//!
//! The addresses are written EIP-55 checksummed (as web3torrent's `pseAccount` is) and read in any
//! case. Every integer in the JSON is within ±(2^53 − 1), the range JavaScript's `JSON.parse`
//! keeps exactly: amounts are hex strings and the channel nonce a decimal string.
//!
//! `data` is a [`Message`]: a one-key object whose key names the kind. Field names are one or two
//! letters; amounts are `0x` hex quantities; channel ids are `0x` hex; **signatures are the 65-byte
//! `r ‖ s ‖ v` in unpadded base64url** (87 characters instead of 132), which keeps a whole voucher
//! envelope under 270 bytes.
//!
//! | key | message | sender | fields |
//! |-----|---------|--------|--------|
//! | `p` | [`Propose`] | payee | `f` fixed part (`participants`, `channelNonce`, `appDefinition`, `challengeDuration`), `d` deposit, `p` price hint (optional), `a` ERC-20 asset (absent for the native coin), `s` payee's prefund signature |
//! | `j` | [`Join`] | payer | `c` channel id, `s0` payer's prefund signature, `s1` payer's postfund signature |
//! | `f` | [`Postfund`] | payee | `c` channel id, `s` payee's postfund signature |
//! | `v` | [`VoucherMessage`] | payer | `c` channel reference (first 8 bytes of the id, 16 hex digits), `a` cumulative amount, `s` voucher signature |
//! | `c` | [`Close`] | either | `c` channel id, `a` amount the final state pays the payee, `s` signature on that final state |
//!
//! A voucher, whole envelope (266 bytes for an amount of 10^15 wei; 121 of them are the envelope's
//! two addresses and keys, 87 the signature):
//!
//! ```json
//! {"recipient":"0x5050A4F4b3f9338C3472dcC01A87C76A144b3c9c","sender":"0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1",
//!  "data":{"v":{"c":"84969bb5ab1bfbe0","a":"0x38d7ea4c68000","s":"qXYaWn-TcRTk8fDLQXsjWaD_8gsQbwFLzY-KJxQ0elUZKI3YMJm7swD7YA92ktKDrhMue07fYLpfTWLKlXacZxw"}}}
//! ```
//!
//! The other kinds, with the same addresses: propose ≈ 470 bytes, join ≈ 390, postfund ≈ 294,
//! close ≈ 316.
//!
//! Receivers never trust hashes from the peer: every message carries only what is needed to
//! **recompute** the signed state, and the signature is checked against the recomputed hash.

use alloy_primitives::{Address, B256, U256, hex};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DecodeError;
use crate::sign::Signature;
use crate::state::FixedPart;

/// Largest envelope [`Envelope::from_json`] parses (checked before parsing).
pub const MAX_ENVELOPE_LEN: usize = 2048;

/// Largest voucher envelope this module can produce (amount `2^256 − 1`: 317 bytes; realistic
/// amounts give 250–270); [`Envelope::from_json`] rejects longer vouchers.
pub const MAX_VOUCHER_ENVELOPE_LEN: usize = 320;

/// The client-api-schema message envelope.
///
/// `recipient` and `sender` are written in EIP-55 checksummed form, the form web3torrent
/// advertises as `pseAccount` and compares as a plain string; they are read in any case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The participant the message is for.
    #[serde(serialize_with = "checksummed")]
    pub recipient: Address,
    /// The participant that sent it.
    #[serde(serialize_with = "checksummed")]
    pub sender: Address,
    /// The message.
    pub data: Message,
}

impl Envelope {
    /// The compact JSON form.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
        serde_json::to_string(self).expect("envelope serialization is infallible")
    }

    /// Parses the JSON form; rejects input over [`MAX_ENVELOPE_LEN`] before parsing, and voucher
    /// envelopes over [`MAX_VOUCHER_ENVELOPE_LEN`].
    pub fn from_json(json: &str) -> Result<Self, DecodeError> {
        Self::from_slice(json.as_bytes())
    }

    /// Like [`Envelope::from_json`], for raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_ENVELOPE_LEN,
            });
        }
        let env: Self =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
        if matches!(env.data, Message::Voucher(_)) && bytes.len() > MAX_VOUCHER_ENVELOPE_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_VOUCHER_ENVELOPE_LEN,
            });
        }
        Ok(env)
    }
}

fn checksummed<S: Serializer>(address: &Address, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&address.to_checksum(None))
    } else {
        address.serialize(s)
    }
}

/// A payment-channel message (the envelope's `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// Payee → payer: a new channel (the prefund state, signed by the payee).
    #[serde(rename = "p")]
    Propose(Propose),
    /// Payer → payee: countersigned prefund and signed postfund, sent once the deposit is on chain.
    #[serde(rename = "j")]
    Join(Join),
    /// Payee → payer: countersigned postfund; the channel is running.
    #[serde(rename = "f")]
    Postfund(Postfund),
    /// Payer → payee: a cumulative voucher.
    #[serde(rename = "v")]
    Voucher(VoucherMessage),
    /// Either way: a signature on the final state.
    #[serde(rename = "c")]
    Close(Close),
}

impl Message {
    /// Short name of the message kind, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Propose(_) => "propose",
            Self::Join(_) => "join",
            Self::Postfund(_) => "postfund",
            Self::Voucher(_) => "voucher",
            Self::Close(_) => "close",
        }
    }

    /// The channel the message is about.
    pub fn channel(&self) -> ChannelKey {
        match self {
            Self::Propose(p) => ChannelKey::Id(p.fixed.channel_id()),
            Self::Join(j) => ChannelKey::Id(j.channel_id),
            Self::Postfund(f) => ChannelKey::Id(f.channel_id),
            Self::Close(c) => ChannelKey::Id(c.channel_id),
            Self::Voucher(v) => ChannelKey::Ref(v.channel),
        }
    }
}

/// How a message names its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKey {
    /// The full channel id.
    Id(B256),
    /// A short reference (vouchers).
    Ref(ChannelRef),
}

impl ChannelKey {
    /// Whether this key names `channel_id`.
    pub fn matches(&self, channel_id: &B256) -> bool {
        match self {
            Self::Id(id) => id == channel_id,
            Self::Ref(r) => r.matches(channel_id),
        }
    }
}

/// The first 8 bytes of a channel id: how a voucher names its channel, to stay small.
///
/// It only routes the voucher; the signature is checked over the **full** id of the channel it is
/// routed to, so a wrong or colliding reference cannot make a voucher count in another channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelRef(pub [u8; 8]);

impl ChannelRef {
    /// The reference of `channel_id`.
    pub fn of(channel_id: &B256) -> Self {
        let mut r = [0u8; 8];
        r.copy_from_slice(&channel_id[..8]);
        Self(r)
    }

    /// Whether this is the reference of `channel_id`.
    pub fn matches(&self, channel_id: &B256) -> bool {
        channel_id[..8] == self.0
    }

    /// The reference padded with zeros to 32 bytes (for error reports).
    pub fn padded(&self) -> B256 {
        let mut b = B256::ZERO;
        b[..8].copy_from_slice(&self.0);
        b
    }
}

impl Serialize for ChannelRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for ChannelRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 8];
        if s.len() != 16 {
            return Err(serde::de::Error::custom(
                "channel ref must be 16 hex digits",
            ));
        }
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

/// Payee → payer: proposes a channel. The payer recomputes the prefund state (turn 0, outcome
/// `{payer: deposit, payee: 0}` in `asset`, empty app data, not final) from these fields and
/// checks `signature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Propose {
    /// The fixed part: `participants = [payer, payee]`.
    #[serde(rename = "f")]
    pub fixed: FixedPart,
    /// The payer's deposit, in wei.
    #[serde(rename = "d")]
    pub deposit: U256,
    /// Advisory price (smallest units of the asset per byte) the payee intends to charge;
    /// checked by the join policy.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub price: Option<U256>,
    /// The asset of the deposit and the outcome: absent (zero) for the native coin, an ERC-20's
    /// address otherwise. It is part of the signed prefund state's outcome.
    #[serde(rename = "a", default, skip_serializing_if = "is_native")]
    pub asset: Address,
    /// The payee's signature on the prefund state.
    #[serde(rename = "s", with = "b64_sig")]
    pub signature: Signature,
}

fn is_native(asset: &Address) -> bool {
    *asset == Address::ZERO
}

/// Payer → payee: joins a funded channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The channel.
    #[serde(rename = "c")]
    pub channel_id: B256,
    /// The payer's signature on the prefund state (turn 0).
    #[serde(rename = "s0", with = "b64_sig")]
    pub prefund: Signature,
    /// The payer's signature on the postfund state (turn 1, same outcome).
    #[serde(rename = "s1", with = "b64_sig")]
    pub postfund: Signature,
}

/// Payee → payer: countersigns the postfund state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postfund {
    /// The channel.
    #[serde(rename = "c")]
    pub channel_id: B256,
    /// The payee's signature on the postfund state.
    #[serde(rename = "s", with = "b64_sig")]
    pub signature: Signature,
}

/// Payer → payee: a voucher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherMessage {
    /// The channel's short reference.
    #[serde(rename = "c")]
    pub channel: ChannelRef,
    /// Cumulative amount.
    #[serde(rename = "a")]
    pub amount: U256,
    /// Signature over `keccak256(abi.encode(channelId, amount))` (EIP-191).
    #[serde(rename = "s", with = "b64_sig")]
    pub signature: Signature,
}

impl VoucherMessage {
    /// The message for `voucher`.
    pub fn from_voucher(voucher: &crate::voucher::Voucher) -> Self {
        Self {
            channel: ChannelRef::of(&voucher.channel_id),
            amount: voucher.amount,
            signature: voucher.signature,
        }
    }

    /// The voucher, for the full `channel_id` this message was routed to.
    pub fn to_voucher(&self, channel_id: B256) -> crate::voucher::Voucher {
        crate::voucher::Voucher {
            channel_id,
            amount: self.amount,
            signature: self.signature,
        }
    }
}

/// Either way: a signature on the final state (turn 3, `isFinal`, outcome
/// `{payer: deposit − amount, payee: amount}`, empty app data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Close {
    /// The channel.
    #[serde(rename = "c")]
    pub channel_id: B256,
    /// What the final state pays the payee.
    #[serde(rename = "a")]
    pub amount: U256,
    /// The sender's signature on the final state.
    #[serde(rename = "s", with = "b64_sig")]
    pub signature: Signature,
}

/// Serde for a [`Signature`] as unpadded base64url of `r ‖ s ‖ v`.
mod b64_sig {
    use super::*;

    pub(super) fn serialize<S: Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64url::encode(&sig.to_rsv()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() != 87 {
            return Err(serde::de::Error::custom(
                "signature must be 87 base64url characters",
            ));
        }
        let bytes = base64url::decode(&s)
            .ok_or_else(|| serde::de::Error::custom("invalid base64url signature"))?;
        Signature::from_rsv(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Unpadded, canonical base64url (RFC 4648 §5): the `base64` crate's `URL_SAFE_NO_PAD` engine.
pub mod base64url {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// Encodes without padding.
    pub fn encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes unpadded base64url; `None` on any invalid character, padding, impossible length
    /// or non-zero trailing bits (so every byte string has exactly one accepted encoding).
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(s).ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc4648_vectors() {
            for (raw, enc) in [
                ("", ""),
                ("f", "Zg"),
                ("fo", "Zm8"),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg"),
                ("fooba", "Zm9vYmE"),
                ("foobar", "Zm9vYmFy"),
            ] {
                assert_eq!(encode(raw.as_bytes()), enc);
                assert_eq!(decode(enc).unwrap(), raw.as_bytes());
            }
            assert_eq!(encode(&[0xfb, 0xff]), "-_8");
            assert!(decode("Zh").is_none(), "non-canonical trailing bits");
            assert!(decode("Z").is_none());
            assert!(decode("Zm9v=").is_none());
            assert!(decode("Zm+v").is_none());
        }

        /// Outputs of the former hand-written encoder (65-byte signatures, as in every message),
        /// pinned so that the switch to the `base64` crate provably changes no byte on the wire.
        #[test]
        fn signature_encodings_are_unchanged() {
            let mut sig = [0x5au8; 65];
            sig[64] = 28;
            let ascending: Vec<u8> = (0..65).collect();
            let descending: Vec<u8> = (191..=255).collect();
            for (raw, enc) in [
                (
                    &sig[..],
                    "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWhw",
                ),
                (
                    &ascending[..],
                    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-P0A",
                ),
                (
                    &descending[..],
                    "v8DBwsPExcbHyMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5ufo6err7O3u7_Dx8vP09fb3-Pn6-_z9_v8",
                ),
            ] {
                assert_eq!(encode(raw), enc);
                assert_eq!(decode(enc).unwrap(), raw);
            }
            // The voucher signature of the module docs' example envelope.
            let doc = "qXYaWn-TcRTk8fDLQXsjWaD_8gsQbwFLzY-KJxQ0elUZKI3YMJm7swD7YA92ktKDrhMue07fYLpfTWLKlXacZxw";
            assert_eq!(encode(&decode(doc).unwrap()), doc);
        }

        #[test]
        fn round_trip_all_lengths() {
            let data: Vec<u8> = (0..=255u8).collect();
            for n in 0..70 {
                assert_eq!(decode(&encode(&data[..n])).unwrap(), &data[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYER: Address = Address::new(hex_literal::hex!(
        "5050a4f4b3f9338c3472dcc01a87c76a144b3c9c"
    ));
    const PAYEE: Address = Address::new(hex_literal::hex!(
        "1a642f0e3c3af545e7acbd38b07251b3990914f1"
    ));

    fn sig() -> Signature {
        let mut rsv = [0x5au8; 65];
        rsv[64] = 28;
        Signature::from_rsv(&rsv).unwrap()
    }

    fn every_kind() -> Vec<Message> {
        let fixed = FixedPart {
            participants: vec![PAYER, PAYEE],
            channel_nonce: 4_211_659_201_689_351_742,
            app_definition: Address::repeat_byte(0x33),
            challenge_duration: 86_400,
        };
        let id = fixed.channel_id();
        vec![
            Message::Propose(Propose {
                fixed,
                deposit: U256::MAX,
                price: Some(U256::MAX),
                asset: Address::repeat_byte(0x44),
                signature: sig(),
            }),
            Message::Join(Join {
                channel_id: id,
                prefund: sig(),
                postfund: sig(),
            }),
            Message::Postfund(Postfund {
                channel_id: id,
                signature: sig(),
            }),
            Message::Voucher(VoucherMessage {
                channel: ChannelRef::of(&id),
                amount: U256::MAX,
                signature: sig(),
            }),
            Message::Close(Close {
                channel_id: id,
                amount: U256::MAX,
                signature: sig(),
            }),
        ]
    }

    #[test]
    fn addresses_are_written_checksummed_and_read_in_any_case() {
        let env = Envelope {
            recipient: PAYER,
            sender: PAYEE,
            data: every_kind().remove(3),
        };
        let json = env.to_json();
        assert!(
            json.starts_with(
                r#"{"recipient":"0x5050A4F4b3f9338C3472dcC01A87C76A144b3c9c","sender":"0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1","#
            ),
            "{json}"
        );
        assert_eq!(Envelope::from_json(&json).unwrap(), env);
        let lower = json
            .replace(
                "0x5050A4F4b3f9338C3472dcC01A87C76A144b3c9c",
                &PAYER.to_string().to_lowercase(),
            )
            .replace(
                "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1",
                &PAYEE.to_string().to_lowercase(),
            );
        assert_ne!(lower, json);
        assert_eq!(Envelope::from_json(&lower).unwrap(), env);
    }

    /// Every integer of every message kind, at the largest values, is one JavaScript reads
    /// exactly (within ±(2^53 − 1)); everything wider is a string.
    #[test]
    fn every_json_integer_is_javascript_safe() {
        fn walk(v: &serde_json::Value, numbers: &mut Vec<serde_json::Number>) {
            match v {
                serde_json::Value::Number(n) => numbers.push(n.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, numbers)),
                serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, numbers)),
                _ => {}
            }
        }
        let mut numbers = Vec::new();
        for data in every_kind() {
            let env = Envelope {
                recipient: PAYER,
                sender: PAYEE,
                data,
            };
            let json = env.to_json();
            assert_eq!(Envelope::from_json(&json).unwrap(), env, "{json}");
            walk(&serde_json::from_str(&json).unwrap(), &mut numbers);
        }
        // The challenge duration is the only number left.
        assert_eq!(numbers.len(), 1, "{numbers:?}");
        for n in numbers {
            let ok = n.as_u64().is_some_and(|x| x < 1 << 53)
                || n.as_i64().is_some_and(|x| x.unsigned_abs() < 1 << 53);
            assert!(ok, "{n} is beyond 2^53 - 1");
        }
    }
}

//! JSON <-> SV2 frame conversion for every message type defined by common_messages_sv2 9.0.0,
//! mining_sv2 12.0.0 and extensions_sv2 0.3.0 (extension 0x0001), using the SRI types and codec
//! (framing_sv2 / codec_sv2) for the bytes, and parsers_sv2 0.6.0 for TLV fields.
//!
//! JSON conventions (shared with tests/interop/test_sri_interop.py):
//! * `"type"`: the Rust struct name, e.g. `"OpenStandardMiningChannel"`;
//! * integers as numbers, F32 as a number (exact for values representable in f32), BOOL as bool;
//! * U256 / B0_32 / B0_255 / B0_64K as lowercase hex of the bytes as they appear on the wire;
//! * STR0_255 as a JSON string (UTF-8);
//! * SEQ0_255[U256] as a list of hex strings, SEQ0_64K[U32] as a list of numbers;
//! * OPTION[U32] as null or a number; SetupConnection.protocol as its U8 discriminant;
//! * SEQ0_64K[U16] (extension lists) as a list of numbers;
//! * SubmitSharesExtended's TLV fields as `"tlvs": [{"extension_type", "field_type", "value" (hex)}]`
//!   (encoded with parsers_sv2's `TlvList::build_frame_bytes_with_tlvs`, decoded with `TlvList`).
//! Decoded frames also carry `"extension_type"`, `"msg_type"` and `"channel_msg"` from the header.

use binary_sv2::{
    B0255Owned, B032Owned, B064KOwned, GetSize, Seq0255Owned, Seq064KOwned, Serialize,
    Str0255Owned, Sv2OptionOwned, U256Owned,
};
use binary_sv2::Seq064K;
use codec_sv2::{Encoder, MessageFrame};
use common_messages_sv2::*;
use extensions_sv2::{
    RequestExtensions, RequestExtensionsError, RequestExtensionsSuccess, EXTENSION_TYPE_EXTENSIONS_NEGOTIATION,
    MESSAGE_TYPE_REQUEST_EXTENSIONS, MESSAGE_TYPE_REQUEST_EXTENSIONS_ERROR, MESSAGE_TYPE_REQUEST_EXTENSIONS_SUCCESS,
};
use mining_sv2::*;
use parsers_sv2::{MiningOwned, Tlv, TlvList};
use serde_json::{json, Map, Value};

pub type R<T> = Result<T, String>;

pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> R<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return Err("odd-length hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bad hex: {e}")))
        .collect()
}

pub struct Obj<'a>(pub &'a Map<String, Value>);

impl Obj<'_> {
    fn get(&self, k: &str) -> R<&Value> {
        self.0.get(k).ok_or_else(|| format!("missing field {k}"))
    }
    fn uint(&self, k: &str, max: u64) -> R<u64> {
        let v = self.get(k)?.as_u64().ok_or_else(|| format!("{k}: not an unsigned integer"))?;
        if v > max {
            return Err(format!("{k}: {v} out of range"));
        }
        Ok(v)
    }
    fn u8(&self, k: &str) -> R<u8> {
        Ok(self.uint(k, u8::MAX as u64)? as u8)
    }
    fn u16(&self, k: &str) -> R<u16> {
        Ok(self.uint(k, u16::MAX as u64)? as u16)
    }
    fn u32(&self, k: &str) -> R<u32> {
        Ok(self.uint(k, u32::MAX as u64)? as u32)
    }
    fn u64(&self, k: &str) -> R<u64> {
        self.uint(k, u64::MAX)
    }
    fn f32(&self, k: &str) -> R<f32> {
        Ok(self.get(k)?.as_f64().ok_or_else(|| format!("{k}: not a number"))? as f32)
    }
    fn bool(&self, k: &str) -> R<bool> {
        self.get(k)?.as_bool().ok_or_else(|| format!("{k}: not a bool"))
    }
    pub fn bytes(&self, k: &str) -> R<Vec<u8>> {
        unhex(self.get(k)?.as_str().ok_or_else(|| format!("{k}: not a hex string"))?)
    }
    fn str0255(&self, k: &str) -> R<Str0255Owned> {
        let s = self.get(k)?.as_str().ok_or_else(|| format!("{k}: not a string"))?;
        Str0255Owned::try_from(s.to_string()).map_err(|e| format!("{k}: {e:?}"))
    }
    fn u256(&self, k: &str) -> R<U256Owned> {
        U256Owned::new(self.bytes(k)?).map_err(|e| format!("{k}: {e:?}"))
    }
    fn b032(&self, k: &str) -> R<B032Owned> {
        B032Owned::new(self.bytes(k)?).map_err(|e| format!("{k}: {e:?}"))
    }
    fn b0255(&self, k: &str) -> R<B0255Owned> {
        B0255Owned::new(self.bytes(k)?).map_err(|e| format!("{k}: {e:?}"))
    }
    fn b064k(&self, k: &str) -> R<B064KOwned> {
        B064KOwned::new(self.bytes(k)?).map_err(|e| format!("{k}: {e:?}"))
    }
    fn opt_u32(&self, k: &str) -> R<Sv2OptionOwned<u32>> {
        match self.get(k)? {
            Value::Null => Ok(Sv2OptionOwned::new(None)),
            _ => Ok(Sv2OptionOwned::new(Some(self.u32(k)?))),
        }
    }
    fn seq_u256(&self, k: &str) -> R<Seq0255Owned<U256Owned>> {
        let list = self.get(k)?.as_array().ok_or_else(|| format!("{k}: not a list"))?;
        let mut out = Vec::with_capacity(list.len());
        for v in list {
            let b = unhex(v.as_str().ok_or_else(|| format!("{k}: item not hex"))?)?;
            out.push(U256Owned::new(b).map_err(|e| format!("{k}: {e:?}"))?);
        }
        Seq0255Owned::new(out).map_err(|e| format!("{k}: {e:?}"))
    }
    fn seq_u16(&self, k: &str) -> R<Seq064K<'static, u16>> {
        let list = self.get(k)?.as_array().ok_or_else(|| format!("{k}: not a list"))?;
        let mut out = Vec::with_capacity(list.len());
        for v in list {
            let n = v.as_u64().filter(|n| *n <= u16::MAX as u64);
            out.push(n.ok_or_else(|| format!("{k}: item not a U16"))? as u16);
        }
        Seq064K::new(out).map_err(|e| format!("{k}: {e:?}"))
    }
    /// `"tlvs"` (absent = none) as SRI `Tlv`s.
    pub fn tlvs(&self) -> R<Vec<Tlv>> {
        let Some(list) = self.0.get("tlvs") else { return Ok(Vec::new()) };
        let list = list.as_array().ok_or("tlvs: not a list")?;
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            let o = Obj(item.as_object().ok_or("tlvs: item not an object")?);
            out.push(Tlv::new(o.u16("extension_type")?, o.u8("field_type")?, o.bytes("value")?));
        }
        Ok(out)
    }
    fn seq_u32(&self, k: &str) -> R<Seq064KOwned<u32>> {
        let list = self.get(k)?.as_array().ok_or_else(|| format!("{k}: not a list"))?;
        let mut out = Vec::with_capacity(list.len());
        for v in list {
            let n = v.as_u64().filter(|n| *n <= u32::MAX as u64);
            out.push(n.ok_or_else(|| format!("{k}: item not a U32"))? as u32);
        }
        Seq064KOwned::new(out).map_err(|e| format!("{k}: {e:?}"))
    }
}

/// Frame a message with the SRI framing code (extension 0, the given type and channel bit).
pub fn frame<T: Serialize + GetSize>(enc: &mut Encoder, msg: T, msg_type: u8, channel_msg: bool) -> R<Vec<u8>> {
    frame_ext(enc, msg, 0, msg_type, channel_msg)
}

/// Frame a message of extension `ext` with the SRI framing code.
pub fn frame_ext<T: Serialize + GetSize>(
    enc: &mut Encoder,
    msg: T,
    ext: u16,
    msg_type: u8,
    channel_msg: bool,
) -> R<Vec<u8>> {
    let frame = MessageFrame::from_message(msg, msg_type, ext, channel_msg).map_err(|e| format!("{e:?}"))?;
    let out = enc.encode(frame).map_err(|e| format!("{e:?}"))?;
    let bytes: &[u8] = out.as_ref();
    Ok(bytes.to_vec())
}

fn protocol(v: u8) -> R<Protocol> {
    Protocol::try_from(v).map_err(|_| format!("invalid protocol {v}"))
}

/// JSON description -> complete plaintext SV2 frame (header + payload), encoded by SRI.
pub fn encode_json(enc: &mut Encoder, v: &Value) -> R<Vec<u8>> {
    let m = Obj(v.as_object().ok_or("message must be a JSON object")?);
    let ty = m.get("type")?.as_str().ok_or("type must be a string")?;
    match ty {
        "SetupConnection" => frame(
            enc,
            SetupConnectionOwned {
                protocol: protocol(m.u8("protocol")?)?,
                min_version: m.u16("min_version")?,
                max_version: m.u16("max_version")?,
                flags: m.u32("flags")?,
                endpoint_host: m.str0255("endpoint_host")?,
                endpoint_port: m.u16("endpoint_port")?,
                vendor: m.str0255("vendor")?,
                hardware_version: m.str0255("hardware_version")?,
                firmware: m.str0255("firmware")?,
                device_id: m.str0255("device_id")?,
            },
            MESSAGE_TYPE_SETUP_CONNECTION,
            CHANNEL_BIT_SETUP_CONNECTION,
        ),
        "SetupConnectionSuccess" => frame(
            enc,
            SetupConnectionSuccess { used_version: m.u16("used_version")?, flags: m.u32("flags")? },
            MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS,
            CHANNEL_BIT_SETUP_CONNECTION_SUCCESS,
        ),
        "SetupConnectionError" => frame(
            enc,
            SetupConnectionErrorOwned { flags: m.u32("flags")?, error_code: m.str0255("error_code")? },
            MESSAGE_TYPE_SETUP_CONNECTION_ERROR,
            CHANNEL_BIT_SETUP_CONNECTION_ERROR,
        ),
        "ChannelEndpointChanged" => frame(
            enc,
            ChannelEndpointChanged { channel_id: m.u32("channel_id")? },
            MESSAGE_TYPE_CHANNEL_ENDPOINT_CHANGED,
            CHANNEL_BIT_CHANNEL_ENDPOINT_CHANGED,
        ),
        "Reconnect" => frame(
            enc,
            ReconnectOwned { new_host: m.str0255("new_host")?, new_port: m.u16("new_port")? },
            MESSAGE_TYPE_RECONNECT,
            CHANNEL_BIT_RECONNECT,
        ),
        "OpenStandardMiningChannel" => frame(
            enc,
            OpenStandardMiningChannelOwned {
                request_id: m.u32("request_id")?.into(),
                user_identity: m.str0255("user_identity")?,
                nominal_hash_rate: m.f32("nominal_hash_rate")?,
                max_target: m.u256("max_target")?,
            },
            MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL,
            CHANNEL_BIT_OPEN_STANDARD_MINING_CHANNEL,
        ),
        "OpenStandardMiningChannelSuccess" => frame(
            enc,
            OpenStandardMiningChannelSuccessOwned {
                request_id: m.u32("request_id")?.into(),
                channel_id: m.u32("channel_id")?,
                target: m.u256("target")?,
                extranonce_prefix: m.b032("extranonce_prefix")?,
                group_channel_id: m.u32("group_channel_id")?,
            },
            MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL_SUCCESS,
            CHANNEL_BIT_OPEN_STANDARD_MINING_CHANNEL_SUCCESS,
        ),
        "OpenMiningChannelError" => frame(
            enc,
            OpenMiningChannelErrorOwned { request_id: m.u32("request_id")?, error_code: m.str0255("error_code")? },
            MESSAGE_TYPE_OPEN_MINING_CHANNEL_ERROR,
            CHANNEL_BIT_OPEN_MINING_CHANNEL_ERROR,
        ),
        "OpenExtendedMiningChannel" => frame(
            enc,
            OpenExtendedMiningChannelOwned {
                request_id: m.u32("request_id")?,
                user_identity: m.str0255("user_identity")?,
                nominal_hash_rate: m.f32("nominal_hash_rate")?,
                max_target: m.u256("max_target")?,
                min_extranonce_size: m.u16("min_extranonce_size")?,
            },
            MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL,
            CHANNEL_BIT_OPEN_EXTENDED_MINING_CHANNEL,
        ),
        "OpenExtendedMiningChannelSuccess" => frame(
            enc,
            OpenExtendedMiningChannelSuccessOwned {
                request_id: m.u32("request_id")?,
                channel_id: m.u32("channel_id")?,
                target: m.u256("target")?,
                extranonce_size: m.u16("extranonce_size")?,
                extranonce_prefix: m.b032("extranonce_prefix")?,
                group_channel_id: m.u32("group_channel_id")?,
            },
            MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS,
            CHANNEL_BIT_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS,
        ),
        "NewMiningJob" => frame(
            enc,
            NewMiningJobOwned {
                channel_id: m.u32("channel_id")?,
                job_id: m.u32("job_id")?,
                min_ntime: m.opt_u32("min_ntime")?,
                version: m.u32("version")?,
                merkle_root: m.u256("merkle_root")?,
            },
            MESSAGE_TYPE_NEW_MINING_JOB,
            CHANNEL_BIT_NEW_MINING_JOB,
        ),
        "UpdateChannel" => frame(
            enc,
            UpdateChannelOwned {
                channel_id: m.u32("channel_id")?,
                nominal_hash_rate: m.f32("nominal_hash_rate")?,
                maximum_target: m.u256("maximum_target")?,
            },
            MESSAGE_TYPE_UPDATE_CHANNEL,
            CHANNEL_BIT_UPDATE_CHANNEL,
        ),
        "UpdateChannelError" => frame(
            enc,
            UpdateChannelErrorOwned { channel_id: m.u32("channel_id")?, error_code: m.str0255("error_code")? },
            MESSAGE_TYPE_UPDATE_CHANNEL_ERROR,
            CHANNEL_BIT_UPDATE_CHANNEL_ERROR,
        ),
        "CloseChannel" => frame(
            enc,
            CloseChannelOwned { channel_id: m.u32("channel_id")?, reason_code: m.str0255("reason_code")? },
            MESSAGE_TYPE_CLOSE_CHANNEL,
            CHANNEL_BIT_CLOSE_CHANNEL,
        ),
        "SetExtranoncePrefix" => frame(
            enc,
            SetExtranoncePrefixOwned {
                channel_id: m.u32("channel_id")?,
                extranonce_prefix: m.b032("extranonce_prefix")?,
            },
            MESSAGE_TYPE_SET_EXTRANONCE_PREFIX,
            CHANNEL_BIT_SET_EXTRANONCE_PREFIX,
        ),
        "SubmitSharesStandard" => frame(
            enc,
            SubmitSharesStandard {
                channel_id: m.u32("channel_id")?,
                sequence_number: m.u32("sequence_number")?,
                job_id: m.u32("job_id")?,
                nonce: m.u32("nonce")?,
                ntime: m.u32("ntime")?,
                version: m.u32("version")?,
            },
            MESSAGE_TYPE_SUBMIT_SHARES_STANDARD,
            CHANNEL_BIT_SUBMIT_SHARES_STANDARD,
        ),
        "SubmitSharesExtended" => {
            let tlvs = m.tlvs()?;
            let msg = submit_shares_extended(&m)?;
            if tlvs.is_empty() {
                frame(enc, msg, MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED, CHANNEL_BIT_SUBMIT_SHARES_EXTENDED)
            } else {
                let list = TlvList::from_slice(&tlvs).map_err(|e| format!("{e:?}"))?;
                list.build_frame_bytes_with_tlvs(MiningOwned::SubmitSharesExtended(msg)).map_err(|e| format!("{e:?}"))
            }
        }
        "RequestExtensions" => frame_ext(
            enc,
            RequestExtensions { request_id: m.u16("request_id")?, requested_extensions: m.seq_u16("requested_extensions")? },
            EXTENSION_TYPE_EXTENSIONS_NEGOTIATION,
            MESSAGE_TYPE_REQUEST_EXTENSIONS,
            false,
        ),
        "RequestExtensionsSuccess" => frame_ext(
            enc,
            RequestExtensionsSuccess {
                request_id: m.u16("request_id")?,
                supported_extensions: m.seq_u16("supported_extensions")?,
            },
            EXTENSION_TYPE_EXTENSIONS_NEGOTIATION,
            MESSAGE_TYPE_REQUEST_EXTENSIONS_SUCCESS,
            false,
        ),
        "RequestExtensionsError" => frame_ext(
            enc,
            RequestExtensionsError {
                request_id: m.u16("request_id")?,
                unsupported_extensions: m.seq_u16("unsupported_extensions")?,
                required_extensions: m.seq_u16("required_extensions")?,
            },
            EXTENSION_TYPE_EXTENSIONS_NEGOTIATION,
            MESSAGE_TYPE_REQUEST_EXTENSIONS_ERROR,
            false,
        ),
        "SubmitSharesSuccess" => frame(
            enc,
            SubmitSharesSuccess {
                channel_id: m.u32("channel_id")?,
                last_sequence_number: m.u32("last_sequence_number")?,
                new_submits_accepted_count: m.u32("new_submits_accepted_count")?,
                new_shares_sum: m.u64("new_shares_sum")?,
            },
            MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS,
            CHANNEL_BIT_SUBMIT_SHARES_SUCCESS,
        ),
        "SubmitSharesError" => frame(
            enc,
            SubmitSharesErrorOwned {
                channel_id: m.u32("channel_id")?,
                sequence_number: m.u32("sequence_number")?,
                error_code: m.str0255("error_code")?,
            },
            MESSAGE_TYPE_SUBMIT_SHARES_ERROR,
            CHANNEL_BIT_SUBMIT_SHARES_ERROR,
        ),
        "NewExtendedMiningJob" => frame(
            enc,
            NewExtendedMiningJobOwned {
                channel_id: m.u32("channel_id")?,
                job_id: m.u32("job_id")?,
                min_ntime: m.opt_u32("min_ntime")?,
                version: m.u32("version")?,
                version_rolling_allowed: m.bool("version_rolling_allowed")?,
                merkle_path: m.seq_u256("merkle_path")?,
                coinbase_tx_prefix: m.b064k("coinbase_tx_prefix")?,
                coinbase_tx_suffix: m.b064k("coinbase_tx_suffix")?,
            },
            MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB,
            CHANNEL_BIT_NEW_EXTENDED_MINING_JOB,
        ),
        "SetNewPrevHash" => frame(
            enc,
            SetNewPrevHashOwned {
                channel_id: m.u32("channel_id")?,
                job_id: m.u32("job_id")?,
                prev_hash: m.u256("prev_hash")?,
                min_ntime: m.u32("min_ntime")?,
                nbits: m.u32("nbits")?,
            },
            MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH,
            CHANNEL_BIT_MINING_SET_NEW_PREV_HASH,
        ),
        "SetTarget" => frame(
            enc,
            SetTargetOwned { channel_id: m.u32("channel_id")?, maximum_target: m.u256("maximum_target")? },
            MESSAGE_TYPE_SET_TARGET,
            CHANNEL_BIT_SET_TARGET,
        ),
        "SetCustomMiningJob" => frame(
            enc,
            SetCustomMiningJobOwned {
                channel_id: m.u32("channel_id")?,
                request_id: m.u32("request_id")?,
                token: m.b0255("token")?,
                version: m.u32("version")?,
                prev_hash: m.u256("prev_hash")?,
                min_ntime: m.u32("min_ntime")?,
                nbits: m.u32("nbits")?,
                coinbase_tx_version: m.u32("coinbase_tx_version")?,
                coinbase_prefix: m.b0255("coinbase_prefix")?,
                coinbase_tx_input_n_sequence: m.u32("coinbase_tx_input_n_sequence")?,
                coinbase_tx_outputs: m.b064k("coinbase_tx_outputs")?,
                coinbase_tx_locktime: m.u32("coinbase_tx_locktime")?,
                merkle_path: m.seq_u256("merkle_path")?,
            },
            MESSAGE_TYPE_SET_CUSTOM_MINING_JOB,
            CHANNEL_BIT_SET_CUSTOM_MINING_JOB,
        ),
        "SetCustomMiningJobSuccess" => frame(
            enc,
            SetCustomMiningJobSuccess {
                channel_id: m.u32("channel_id")?,
                request_id: m.u32("request_id")?,
                job_id: m.u32("job_id")?,
            },
            MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_SUCCESS,
            CHANNEL_BIT_SET_CUSTOM_MINING_JOB_SUCCESS,
        ),
        "SetCustomMiningJobError" => frame(
            enc,
            SetCustomMiningJobErrorOwned {
                channel_id: m.u32("channel_id")?,
                request_id: m.u32("request_id")?,
                error_code: m.str0255("error_code")?,
            },
            MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_ERROR,
            CHANNEL_BIT_SET_CUSTOM_MINING_JOB_ERROR,
        ),
        "SetGroupChannel" => frame(
            enc,
            SetGroupChannelOwned {
                group_channel_id: m.u32("group_channel_id")?,
                channel_ids: m.seq_u32("channel_ids")?,
            },
            MESSAGE_TYPE_SET_GROUP_CHANNEL,
            CHANNEL_BIT_SET_GROUP_CHANNEL,
        ),
        other => Err(format!("unknown message type {other}")),
    }
}

/// The fixed fields of a SubmitSharesExtended from its JSON (the TLVs are separate).
pub fn submit_shares_extended(m: &Obj) -> R<SubmitSharesExtendedOwned> {
    Ok(SubmitSharesExtendedOwned {
        channel_id: m.u32("channel_id")?,
        sequence_number: m.u32("sequence_number")?,
        job_id: m.u32("job_id")?,
        nonce: m.u32("nonce")?,
        ntime: m.u32("ntime")?,
        version: m.u32("version")?,
        extranonce: m.b032("extranonce")?,
    })
}

/// SRI `Tlv`s as the JSON list described above.
pub fn tlvs_json(tlvs: &[Tlv]) -> Value {
    Value::Array(
        tlvs.iter()
            .map(|t| json!({"extension_type": t.r#type.extension_type, "field_type": t.r#type.field_type,
                "value": hex(&t.value)}))
            .collect(),
    )
}

fn u16s(seq: &Seq064K<'_, u16>) -> Value {
    json!(seq.iter().copied().collect::<Vec<u16>>())
}

fn s(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn h(b: &[u8]) -> Value {
    Value::String(hex(b))
}

fn f(x: f32) -> Value {
    json!(x as f64)
}

fn dec<'a, T: binary_sv2::Decodable<'a>>(payload: &'a mut [u8]) -> R<T> {
    binary_sv2::from_bytes(payload).map_err(|e| format!("decode: {e:?}"))
}

/// Complete plaintext frame -> JSON (decoded by the SRI types). Fails on unknown types or bad bytes.
pub fn decode_frame(frame: &[u8]) -> R<Value> {
    if frame.len() < 6 {
        return Err("frame shorter than its header".into());
    }
    let ext_raw = u16::from_le_bytes([frame[0], frame[1]]);
    let msg_type = frame[2];
    let len = u32::from_le_bytes([frame[3], frame[4], frame[5], 0]) as usize;
    if frame.len() != 6 + len {
        return Err(format!("header says {len} payload bytes, frame has {}", frame.len() - 6));
    }
    let ext = ext_raw & 0x7fff;
    let mut payload = frame[6..].to_vec();
    let p = &mut payload[..];
    let mut v = if ext == EXTENSION_TYPE_EXTENSIONS_NEGOTIATION {
        match msg_type {
            MESSAGE_TYPE_REQUEST_EXTENSIONS => {
                let m: RequestExtensions = dec(p)?;
                json!({"type": "RequestExtensions", "request_id": m.request_id,
                    "requested_extensions": u16s(&m.requested_extensions)})
            }
            MESSAGE_TYPE_REQUEST_EXTENSIONS_SUCCESS => {
                let m: RequestExtensionsSuccess = dec(p)?;
                json!({"type": "RequestExtensionsSuccess", "request_id": m.request_id,
                    "supported_extensions": u16s(&m.supported_extensions)})
            }
            MESSAGE_TYPE_REQUEST_EXTENSIONS_ERROR => {
                let m: RequestExtensionsError = dec(p)?;
                json!({"type": "RequestExtensionsError", "request_id": m.request_id,
                    "unsupported_extensions": u16s(&m.unsupported_extensions),
                    "required_extensions": u16s(&m.required_extensions)})
            }
            other => return Err(format!("unknown extension 0x0001 message type {other:#04x}")),
        }
    } else if ext != 0 {
        return Err(format!("unknown extension type {ext:#06x}"));
    } else {
        decode_core(msg_type, p)?
    };
    let obj = v.as_object_mut().expect("json! object");
    obj.insert("extension_type".into(), json!(ext));
    obj.insert("msg_type".into(), json!(msg_type));
    obj.insert("channel_msg".into(), json!(ext_raw & 0x8000 != 0));
    Ok(v)
}

/// A core (extension 0) message's JSON; SubmitSharesExtended also lists every TLV after its fixed fields.
fn decode_core(msg_type: u8, p: &mut [u8]) -> R<Value> {
    let raw = p.to_vec();
    Ok(match msg_type {
        MESSAGE_TYPE_SETUP_CONNECTION => {
            let m: SetupConnection = dec(p)?;
            json!({"type": "SetupConnection", "protocol": m.protocol as u8, "min_version": m.min_version,
                "max_version": m.max_version, "flags": m.flags, "endpoint_host": s(m.endpoint_host.as_bytes()),
                "endpoint_port": m.endpoint_port, "vendor": s(m.vendor.as_bytes()),
                "hardware_version": s(m.hardware_version.as_bytes()), "firmware": s(m.firmware.as_bytes()),
                "device_id": s(m.device_id.as_bytes())})
        }
        MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS => {
            let m: SetupConnectionSuccess = dec(p)?;
            json!({"type": "SetupConnectionSuccess", "used_version": m.used_version, "flags": m.flags})
        }
        MESSAGE_TYPE_SETUP_CONNECTION_ERROR => {
            let m: SetupConnectionError = dec(p)?;
            json!({"type": "SetupConnectionError", "flags": m.flags, "error_code": s(m.error_code.as_bytes())})
        }
        MESSAGE_TYPE_CHANNEL_ENDPOINT_CHANGED => {
            let m: ChannelEndpointChanged = dec(p)?;
            json!({"type": "ChannelEndpointChanged", "channel_id": m.channel_id})
        }
        MESSAGE_TYPE_RECONNECT => {
            let m: Reconnect = dec(p)?;
            json!({"type": "Reconnect", "new_host": s(m.new_host.as_bytes()), "new_port": m.new_port})
        }
        MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL => {
            let m: OpenStandardMiningChannel = dec(p)?;
            json!({"type": "OpenStandardMiningChannel", "request_id": u32::from(m.request_id),
                "user_identity": s(m.user_identity.as_bytes()), "nominal_hash_rate": f(m.nominal_hash_rate),
                "max_target": h(m.max_target.as_bytes())})
        }
        MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL_SUCCESS => {
            let m: OpenStandardMiningChannelSuccess = dec(p)?;
            json!({"type": "OpenStandardMiningChannelSuccess", "request_id": u32::from(m.request_id),
                "channel_id": m.channel_id, "target": h(m.target.as_bytes()),
                "extranonce_prefix": h(m.extranonce_prefix.as_bytes()), "group_channel_id": m.group_channel_id})
        }
        MESSAGE_TYPE_OPEN_MINING_CHANNEL_ERROR => {
            let m: OpenMiningChannelError = dec(p)?;
            json!({"type": "OpenMiningChannelError", "request_id": m.request_id,
                "error_code": s(m.error_code.as_bytes())})
        }
        MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL => {
            let m: OpenExtendedMiningChannel = dec(p)?;
            json!({"type": "OpenExtendedMiningChannel", "request_id": m.request_id,
                "user_identity": s(m.user_identity.as_bytes()), "nominal_hash_rate": f(m.nominal_hash_rate),
                "max_target": h(m.max_target.as_bytes()), "min_extranonce_size": m.min_extranonce_size})
        }
        MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS => {
            let m: OpenExtendedMiningChannelSuccess = dec(p)?;
            json!({"type": "OpenExtendedMiningChannelSuccess", "request_id": m.request_id,
                "channel_id": m.channel_id, "target": h(m.target.as_bytes()), "extranonce_size": m.extranonce_size,
                "extranonce_prefix": h(m.extranonce_prefix.as_bytes()), "group_channel_id": m.group_channel_id})
        }
        MESSAGE_TYPE_NEW_MINING_JOB => {
            let m: NewMiningJob = dec(p)?;
            json!({"type": "NewMiningJob", "channel_id": m.channel_id, "job_id": m.job_id,
                "min_ntime": m.min_ntime.into_inner(), "version": m.version,
                "merkle_root": h(m.merkle_root.as_bytes())})
        }
        MESSAGE_TYPE_UPDATE_CHANNEL => {
            let m: UpdateChannel = dec(p)?;
            json!({"type": "UpdateChannel", "channel_id": m.channel_id, "nominal_hash_rate": f(m.nominal_hash_rate),
                "maximum_target": h(m.maximum_target.as_bytes())})
        }
        MESSAGE_TYPE_UPDATE_CHANNEL_ERROR => {
            let m: UpdateChannelError = dec(p)?;
            json!({"type": "UpdateChannelError", "channel_id": m.channel_id, "error_code": s(m.error_code.as_bytes())})
        }
        MESSAGE_TYPE_CLOSE_CHANNEL => {
            let m: CloseChannel = dec(p)?;
            json!({"type": "CloseChannel", "channel_id": m.channel_id, "reason_code": s(m.reason_code.as_bytes())})
        }
        MESSAGE_TYPE_SET_EXTRANONCE_PREFIX => {
            let m: SetExtranoncePrefix = dec(p)?;
            json!({"type": "SetExtranoncePrefix", "channel_id": m.channel_id,
                "extranonce_prefix": h(m.extranonce_prefix.as_bytes())})
        }
        MESSAGE_TYPE_SUBMIT_SHARES_STANDARD => {
            let m: SubmitSharesStandard = dec(p)?;
            json!({"type": "SubmitSharesStandard", "channel_id": m.channel_id, "sequence_number": m.sequence_number,
                "job_id": m.job_id, "nonce": m.nonce, "ntime": m.ntime, "version": m.version})
        }
        MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED => {
            let m: SubmitSharesExtended = dec(p)?;
            let mut tlvs = Vec::new();
            for t in TlvList::from_bytes(&raw[m.get_size()..]).iter() {
                tlvs.push(t.map_err(|e| format!("tlv: {e:?}"))?);
            }
            json!({"type": "SubmitSharesExtended", "channel_id": m.channel_id, "sequence_number": m.sequence_number,
                "job_id": m.job_id, "nonce": m.nonce, "ntime": m.ntime, "version": m.version,
                "extranonce": h(m.extranonce.as_bytes()), "tlvs": tlvs_json(&tlvs)})
        }
        MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS => {
            let m: SubmitSharesSuccess = dec(p)?;
            json!({"type": "SubmitSharesSuccess", "channel_id": m.channel_id,
                "last_sequence_number": m.last_sequence_number,
                "new_submits_accepted_count": m.new_submits_accepted_count, "new_shares_sum": m.new_shares_sum})
        }
        MESSAGE_TYPE_SUBMIT_SHARES_ERROR => {
            let m: SubmitSharesError = dec(p)?;
            json!({"type": "SubmitSharesError", "channel_id": m.channel_id, "sequence_number": m.sequence_number,
                "error_code": s(m.error_code.as_bytes())})
        }
        MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB => {
            let m: NewExtendedMiningJob = dec(p)?;
            let path: Vec<Value> = m.merkle_path.iter().map(|x| h(x.as_bytes())).collect();
            json!({"type": "NewExtendedMiningJob", "channel_id": m.channel_id, "job_id": m.job_id,
                "min_ntime": m.min_ntime.into_inner(), "version": m.version,
                "version_rolling_allowed": m.version_rolling_allowed, "merkle_path": path,
                "coinbase_tx_prefix": h(m.coinbase_tx_prefix.as_bytes()),
                "coinbase_tx_suffix": h(m.coinbase_tx_suffix.as_bytes())})
        }
        MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH => {
            let m: SetNewPrevHash = dec(p)?;
            json!({"type": "SetNewPrevHash", "channel_id": m.channel_id, "job_id": m.job_id,
                "prev_hash": h(m.prev_hash.as_bytes()), "min_ntime": m.min_ntime, "nbits": m.nbits})
        }
        MESSAGE_TYPE_SET_TARGET => {
            let m: SetTarget = dec(p)?;
            json!({"type": "SetTarget", "channel_id": m.channel_id, "maximum_target": h(m.maximum_target.as_bytes())})
        }
        MESSAGE_TYPE_SET_CUSTOM_MINING_JOB => {
            let m: SetCustomMiningJob = dec(p)?;
            let path: Vec<Value> = m.merkle_path.iter().map(|x| h(x.as_bytes())).collect();
            json!({"type": "SetCustomMiningJob", "channel_id": m.channel_id, "request_id": m.request_id,
                "token": h(m.token.as_bytes()), "version": m.version, "prev_hash": h(m.prev_hash.as_bytes()),
                "min_ntime": m.min_ntime, "nbits": m.nbits, "coinbase_tx_version": m.coinbase_tx_version,
                "coinbase_prefix": h(m.coinbase_prefix.as_bytes()),
                "coinbase_tx_input_n_sequence": m.coinbase_tx_input_n_sequence,
                "coinbase_tx_outputs": h(m.coinbase_tx_outputs.as_bytes()),
                "coinbase_tx_locktime": m.coinbase_tx_locktime, "merkle_path": path})
        }
        MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_SUCCESS => {
            let m: SetCustomMiningJobSuccess = dec(p)?;
            json!({"type": "SetCustomMiningJobSuccess", "channel_id": m.channel_id, "request_id": m.request_id,
                "job_id": m.job_id})
        }
        MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_ERROR => {
            let m: SetCustomMiningJobError = dec(p)?;
            json!({"type": "SetCustomMiningJobError", "channel_id": m.channel_id, "request_id": m.request_id,
                "error_code": s(m.error_code.as_bytes())})
        }
        MESSAGE_TYPE_SET_GROUP_CHANNEL => {
            let m: SetGroupChannel = dec(p)?;
            let ids: Vec<u32> = m.channel_ids.iter().copied().collect();
            json!({"type": "SetGroupChannel", "group_channel_id": m.group_channel_id, "channel_ids": ids})
        }
        other => return Err(format!("unknown message type {other:#04x}")),
    })
}

/// A JSON sample of every message type, with non-trivial values, for `sv2-interop samples`.
pub fn samples() -> Vec<Value> {
    let t = |b: u8| hex(&[b; 32]);
    vec![
        json!({"type": "SetupConnection", "protocol": 0, "min_version": 2, "max_version": 2, "flags": 1,
            "endpoint_host": "pool.example", "endpoint_port": 3333, "vendor": "ckbpool",
            "hardware_version": "hw-1", "firmware": "fw-2", "device_id": "rig-7"}),
        json!({"type": "SetupConnectionSuccess", "used_version": 2, "flags": 2}),
        json!({"type": "SetupConnectionError", "flags": 4, "error_code": "unsupported-feature-flags"}),
        json!({"type": "ChannelEndpointChanged", "channel_id": 7}),
        json!({"type": "Reconnect", "new_host": "other.example", "new_port": 34254}),
        json!({"type": "OpenStandardMiningChannel", "request_id": 1, "user_identity": "ckb1qyq.worker1",
            "nominal_hash_rate": 1099511627776.0, "max_target": t(0xff)}),
        json!({"type": "OpenStandardMiningChannelSuccess", "request_id": 1, "channel_id": 5, "target": t(0x0f),
            "extranonce_prefix": "0011223344556677", "group_channel_id": 0}),
        json!({"type": "OpenMiningChannelError", "request_id": 3, "error_code": "unknown-user"}),
        json!({"type": "OpenExtendedMiningChannel", "request_id": 2, "user_identity": "proxy",
            "nominal_hash_rate": 2251799813685248.0, "max_target": t(0xee), "min_extranonce_size": 8}),
        json!({"type": "OpenExtendedMiningChannelSuccess", "request_id": 2, "channel_id": 6, "target": t(0x0e),
            "extranonce_size": 12, "extranonce_prefix": "deadbeef", "group_channel_id": 1}),
        json!({"type": "NewMiningJob", "channel_id": 5, "job_id": 9, "min_ntime": null, "version": 0,
            "merkle_root": t(0xab)}),
        json!({"type": "UpdateChannel", "channel_id": 5, "nominal_hash_rate": 1.5, "maximum_target": t(0x7f)}),
        json!({"type": "UpdateChannelError", "channel_id": 5, "error_code": "invalid-channel-id"}),
        json!({"type": "CloseChannel", "channel_id": 5, "reason_code": "bye"}),
        json!({"type": "SetExtranoncePrefix", "channel_id": 6, "extranonce_prefix": "0102030405"}),
        json!({"type": "SubmitSharesStandard", "channel_id": 5, "sequence_number": 11, "job_id": 9,
            "nonce": 4000000000u32, "ntime": 1700000000, "version": 536870912}),
        json!({"type": "SubmitSharesExtended", "channel_id": 6, "sequence_number": 12, "job_id": 10,
            "nonce": 1, "ntime": 2, "version": 3, "extranonce": "000000000000000000114026", "tlvs": []}),
        json!({"type": "SubmitSharesExtended", "channel_id": 6, "sequence_number": 13, "job_id": 10,
            "nonce": 4, "ntime": 5, "version": 6, "extranonce": "00000001",
            "tlvs": [{"extension_type": 2, "field_type": 1, "value": hex(b"Worker_001")},
                     {"extension_type": 0x4ccb, "field_type": 7, "value": ""}]}),
        json!({"type": "RequestExtensions", "request_id": 1, "requested_extensions": [2, 0x4ccb]}),
        json!({"type": "RequestExtensionsSuccess", "request_id": 1, "supported_extensions": [2]}),
        json!({"type": "RequestExtensionsError", "request_id": 65535, "unsupported_extensions": [0x4ccb, 3],
            "required_extensions": [2]}),
        json!({"type": "SubmitSharesSuccess", "channel_id": 6, "last_sequence_number": 12,
            "new_submits_accepted_count": 2, "new_shares_sum": 18446744073709551615u64}),
        json!({"type": "SubmitSharesError", "channel_id": 6, "sequence_number": 13, "error_code": "stale-share"}),
        json!({"type": "NewExtendedMiningJob", "channel_id": 6, "job_id": 10, "min_ntime": 1700000000,
            "version": 1, "version_rolling_allowed": true, "merkle_path": [t(1), t(2)],
            "coinbase_tx_prefix": "01020304", "coinbase_tx_suffix": "ffee"}),
        json!({"type": "SetNewPrevHash", "channel_id": 6, "job_id": 10, "prev_hash": t(0x11),
            "min_ntime": 1700000001, "nbits": 0x1d00ffff}),
        json!({"type": "SetTarget", "channel_id": 6, "maximum_target": t(0x22)}),
        json!({"type": "SetCustomMiningJob", "channel_id": 6, "request_id": 4, "token": "aabb", "version": 2,
            "prev_hash": t(0x33), "min_ntime": 5, "nbits": 6, "coinbase_tx_version": 2,
            "coinbase_prefix": "0304", "coinbase_tx_input_n_sequence": 4294967295u32,
            "coinbase_tx_outputs": "00", "coinbase_tx_locktime": 0, "merkle_path": [t(4)]}),
        json!({"type": "SetCustomMiningJobSuccess", "channel_id": 6, "request_id": 4, "job_id": 77}),
        json!({"type": "SetCustomMiningJobError", "channel_id": 6, "request_id": 4, "error_code": "stale-chain-tip"}),
        json!({"type": "SetGroupChannel", "group_channel_id": 1, "channel_ids": [5, 6, 4294967295u32]}),
    ]
}

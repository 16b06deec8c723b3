//! sv2-interop: drives the SRI reference crates so ckbpool's Python SV2 stack can be checked against
//! them. Every line printed on stdout is one JSON object; diagnostics go to stderr.
//!
//! Subcommands:
//!   responder --port P --authority-secret B58|HEX [--valid-from T --not-valid-after T] [--connections N]
//!       listen on 127.0.0.1:P (0 = any; prints {"event":"listening","port":..}), complete the Noise
//!       handshake with noise_sv2's Responder (which, as in SRI, makes a fresh static key per connection
//!       and signs its certificate with the authority key; --valid-from/--not-valid-after set the
//!       certificate window), then print every received message and answer SetupConnection,
//!       OpenStandardMiningChannel, OpenExtendedMiningChannel (and SubmitShares*) with a success reply;
//!       any other message is echoed back (decoded and re-encoded by SRI).
//!   initiator --port P --authority-pub B58 [--now T]
//!       connect, handshake (noise_sv2 Initiator verifying the certificate), send SetupConnection,
//!       OpenStandardMiningChannel, OpenExtendedMiningChannel, print each reply, close.
//!   encode   stdin: JSON message per line  -> stdout: {"hex": frame} or {"error": ..}
//!   decode   stdin: hex frame per line     -> stdout: decoded JSON or {"error": ..}
//!   samples  print one JSON sample of every message type
//!   tlv-encode  stdin: {"share": SubmitSharesExtended JSON, "user_identity": S} per line -> {"hex": frame}:
//!       extensions_sv2's UserIdentity as a TLV (parsers_sv2 TlvField), framed by TlvList's frame builder
//!   tlv-decode  stdin: {"hex": frame, "negotiated": [ext, ..]} per line -> {"tlvs": [..], "user_identity": S|null,
//!       "user_identity_error": E|null}: parsers_sv2::parse_message_frame_with_tlvs, then UserIdentity::from_tlv
//!   bench [--seconds S]  SRI figures: share-sized encode+encrypt, decrypt+decode, responder handshakes/s

mod messages;

use std::collections::HashMap;
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codec_sv2::{
    Decrypted, Encoder, Handshake, MessageFrame, NoiseDecoder, NoiseEncoder, TransportDecryptState,
    TransportEncryptState,
};
use key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use mining_sv2::{SubmitSharesExtended, SubmitSharesExtendedOwned, MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED};
use noise_sv2::{Initiator, Responder, ELLSWIFT_ENCODING_SIZE, INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE};
use serde_json::{json, Value};

use extensions_sv2::{UserIdentity, EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, TLV_FIELD_TYPE_USER_IDENTITY};
use framing_sv2::header::Header;
use parsers_sv2::{parse_message_frame_with_tlvs, MiningOwned, TlvField, TlvList};

use messages::{decode_frame, encode_json, hex, submit_shares_extended, tlvs_json, unhex, Obj, R};

fn emit(v: Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

fn parse_args(args: &[String]) -> R<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let key = k.strip_prefix("--").ok_or_else(|| format!("unexpected argument {k}"))?;
        let val = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
        map.insert(key.to_string(), val.clone());
    }
    Ok(map)
}

fn arg<'a>(m: &'a HashMap<String, String>, k: &str) -> R<&'a str> {
    m.get(k).map(|s| s.as_str()).ok_or_else(|| format!("missing --{k}"))
}

fn arg_u32(m: &HashMap<String, String>, k: &str, default: u32) -> R<u32> {
    match m.get(k) {
        Some(v) => v.parse().map_err(|_| format!("--{k}: not a number")),
        None => Ok(default),
    }
}

fn secret32(text: &str) -> R<[u8; 32]> {
    if text.len() == 64 {
        if let Ok(b) = unhex(text) {
            return b.try_into().map_err(|_| "secret must be 32 bytes".to_string());
        }
    }
    let k: Secp256k1SecretKey = text.parse().map_err(|e| format!("secret key: {e}"))?;
    Ok(k.into_bytes())
}

/// One end of an established encrypted channel, using codec_sv2's Noise encoder/decoder.
struct Channel {
    stream: TcpStream,
    enc: TransportEncryptState,
    dec: Option<TransportDecryptState>,
    encoder: NoiseEncoder,
    decoder: NoiseDecoder,
    plain: Encoder,
}

impl Channel {
    fn send_json(&mut self, msg: &Value) -> R<()> {
        let frame = encode_json(&mut self.plain, msg)?;
        let sframe = codec_sv2::SerializedFrame::from_bytes(frame).map_err(|e| format!("{e:?}"))?;
        let wire = self.encoder.encode_transport(sframe, &mut self.enc).map_err(|e| format!("{e:?}"))?;
        self.stream.write_all(wire.as_ref()).map_err(|e| format!("write: {e}"))?;
        emit(json!({"event": "sent", "message": msg}));
        Ok(())
    }

    /// Next plaintext frame, or None on a clean EOF.
    fn recv_frame(&mut self) -> R<Option<Vec<u8>>> {
        let mut state = self.dec.take().ok_or("decoder state lost after an error")?;
        loop {
            let buf = self.decoder.writable();
            if let Err(e) = self.stream.read_exact(buf) {
                return if e.kind() == ErrorKind::UnexpectedEof { Ok(None) } else { Err(format!("read: {e}")) };
            }
            match self.decoder.next_transport_frame(state) {
                Ok(Decrypted::Frame(frame, st)) => {
                    self.dec = Some(st);
                    return Ok(Some(frame.as_bytes().to_vec()));
                }
                Ok(Decrypted::Incomplete(_, st)) => state = st,
                Err(e) => return Err(format!("transport: {e:?}")),
            }
        }
    }

    fn new(stream: TcpStream, transport: codec_sv2::Transport) -> Self {
        let (enc, dec) = transport.split();
        Channel {
            stream,
            enc,
            dec: Some(dec),
            encoder: NoiseEncoder::new(),
            decoder: NoiseDecoder::new(),
            plain: Encoder::new(),
        }
    }
}

fn reply_for(msg: &Value) -> Option<Value> {
    let ty = msg.get("type")?.as_str()?;
    let rid = msg.get("request_id").cloned().unwrap_or(json!(0));
    match ty {
        "SetupConnection" => Some(json!({"type": "SetupConnectionSuccess", "used_version": 2, "flags": 0})),
        "OpenStandardMiningChannel" => Some(json!({"type": "OpenStandardMiningChannelSuccess", "request_id": rid,
            "channel_id": 1, "target": hex(&[0xff; 32]), "extranonce_prefix": "0000000100000002",
            "group_channel_id": 0})),
        "OpenExtendedMiningChannel" => Some(json!({"type": "OpenExtendedMiningChannelSuccess", "request_id": rid,
            "channel_id": 2, "target": hex(&[0x7f; 32]), "extranonce_size": 12, "extranonce_prefix": "00c904bd",
            "group_channel_id": 0})),
        "SubmitSharesStandard" | "SubmitSharesExtended" => Some(json!({"type": "SubmitSharesSuccess",
            "channel_id": msg.get("channel_id").cloned().unwrap_or(json!(0)),
            "last_sequence_number": msg.get("sequence_number").cloned().unwrap_or(json!(0)),
            "new_submits_accepted_count": 1, "new_shares_sum": 1})),
        _ => None,
    }
}

fn run_responder(m: &HashMap<String, String>) -> R<()> {
    let secret = secret32(arg(m, "authority-secret")?)?;
    let sk = secp256k1::SecretKey::from_slice(&secret).map_err(|e| format!("authority-secret: {e}"))?;
    let public = Secp256k1PublicKey::from(Secp256k1SecretKey(sk));
    let valid_from = arg_u32(m, "valid-from", now())?;
    let not_valid_after = arg_u32(m, "not-valid-after", valid_from.saturating_add(3600))?;
    let validity = not_valid_after.checked_sub(valid_from).ok_or("--not-valid-after before --valid-from")?;
    let connections = arg_u32(m, "connections", 1)?;
    let listener = TcpListener::bind(("127.0.0.1", arg_u32(m, "port", 0)? as u16)).map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    emit(json!({"event": "listening", "port": port, "authority_pub": public.to_string()}));
    for _ in 0..connections {
        let (mut stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut msg1 = [0u8; ELLSWIFT_ENCODING_SIZE];
        stream.read_exact(&mut msg1).map_err(|e| format!("read msg1: {e}"))?;
        let responder = Responder::from_authority_kp(&public.into_bytes(), &secret, Duration::from_secs(validity as u64))
            .map_err(|e| format!("responder: {e:?}"))?;
        let (msg2, transport) = Handshake::responder(responder)
            .step_1_with_now_rng(msg1, valid_from, &mut rand::thread_rng())
            .map_err(|e| format!("step_1: {e:?}"))?;
        stream.write_all(msg2.payload()).map_err(|e| format!("write msg2: {e}"))?;
        emit(json!({"event": "handshake", "role": "responder", "valid_from": valid_from,
            "not_valid_after": not_valid_after}));
        let mut ch = Channel::new(stream, transport);
        loop {
            let frame = match ch.recv_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    emit(json!({"event": "error", "error": e}));
                    break;
                }
            };
            match decode_frame(&frame) {
                Ok(msg) => {
                    emit(json!({"event": "received", "message": msg, "hex": hex(&frame)}));
                    // Success replies for the channel set-up messages; anything else is echoed back,
                    // re-encoded by SRI (so large frames exercise chunking in both directions).
                    let reply = reply_for(&msg).unwrap_or_else(|| msg.clone());
                    ch.send_json(&reply)?;
                }
                Err(e) => emit(json!({"event": "undecodable", "error": e, "hex": hex(&frame)})),
            }
        }
        emit(json!({"event": "closed"}));
    }
    Ok(())
}

/// The messages the Rust initiator sends, in order; each expects one reply.
fn initiator_script() -> Vec<Value> {
    vec![
        json!({"type": "SetupConnection", "protocol": 0, "min_version": 2, "max_version": 2, "flags": 0,
            "endpoint_host": "127.0.0.1", "endpoint_port": 3333, "vendor": "sri-interop",
            "hardware_version": "", "firmware": "noise_sv2-2.0.0", "device_id": "rust-initiator"}),
        json!({"type": "OpenStandardMiningChannel", "request_id": 10, "user_identity": "ckb1qyq.rust",
            "nominal_hash_rate": 1099511627776.0, "max_target": hex(&[0xff; 32])}),
        json!({"type": "OpenExtendedMiningChannel", "request_id": 11, "user_identity": "ckb1qyq.rust-proxy",
            "nominal_hash_rate": 562949953421312.0, "max_target": hex(&[0xff; 32]), "min_extranonce_size": 8}),
    ]
}

fn run_initiator(m: &HashMap<String, String>) -> R<()> {
    let authority: Secp256k1PublicKey = arg(m, "authority-pub")?.parse().map_err(|e| format!("authority-pub: {e}"))?;
    let port = arg_u32(m, "port", 0)? as u16;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let initiator = Initiator::from_raw_k(authority.into_bytes()).map_err(|e| format!("initiator: {e:?}"))?;
    let (msg1, hs) = Handshake::initiator(initiator).step_0().map_err(|e| format!("step_0: {e:?}"))?;
    stream.write_all(msg1.payload()).map_err(|e| format!("write msg1: {e}"))?;
    let mut msg2 = [0u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE];
    stream.read_exact(&mut msg2).map_err(|e| format!("read msg2: {e}"))?;
    let at = arg_u32(m, "now", now())?;
    let transport = match hs.step_2_with_now(msg2, at) {
        Ok(t) => t,
        Err(e) => {
            emit(json!({"event": "handshake_error", "error": format!("{e:?}")}));
            return Err("handshake failed".into());
        }
    };
    emit(json!({"event": "handshake", "role": "initiator"}));
    let mut ch = Channel::new(stream, transport);
    for msg in initiator_script() {
        ch.send_json(&msg)?;
        match ch.recv_frame()? {
            Some(frame) => match decode_frame(&frame) {
                Ok(v) => emit(json!({"event": "received", "message": v, "hex": hex(&frame)})),
                Err(e) => emit(json!({"event": "undecodable", "error": e, "hex": hex(&frame)})),
            },
            None => return Err("peer closed before replying".into()),
        }
    }
    ch.stream.shutdown(std::net::Shutdown::Both).ok();
    emit(json!({"event": "closed"}));
    Ok(())
}

fn run_encode() -> R<()> {
    let mut enc = Encoder::new();
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let out = serde_json::from_str::<Value>(&line)
            .map_err(|e| e.to_string())
            .and_then(|v| encode_json(&mut enc, &v));
        emit(match out {
            Ok(frame) => json!({"hex": hex(&frame)}),
            Err(e) => json!({"error": e}),
        });
    }
    Ok(())
}

fn run_decode() -> R<()> {
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        emit(match unhex(&line).and_then(|f| decode_frame(&f)) {
            Ok(v) => v,
            Err(e) => json!({"error": e}),
        });
    }
    Ok(())
}

/// One `tlv-encode` line: the share's frame with a user_identity TLV, built by the SRI crates.
fn tlv_encode(v: &Value) -> R<Vec<u8>> {
    let m = Obj(v.as_object().ok_or("line must be a JSON object")?);
    let share = submit_shares_extended(&Obj(m.0.get("share").and_then(Value::as_object).ok_or("missing share")?))?;
    let name = m.0.get("user_identity").and_then(Value::as_str).ok_or("missing user_identity")?;
    let identity = UserIdentity::new(name).map_err(|e| format!("UserIdentity: {e}"))?;
    let tlv = identity.to_bytes().map_err(|e| format!("{e:?}"))?;
    TlvList::from_bytes(&tlv)
        .build_frame_bytes_with_tlvs(MiningOwned::SubmitSharesExtended(share))
        .map_err(|e| format!("{e:?}"))
}

/// One `tlv-decode` line: what SRI's parser finds in a frame for the given negotiated extensions.
fn tlv_decode(v: &Value) -> R<Value> {
    let m = Obj(v.as_object().ok_or("line must be a JSON object")?);
    let mut frame = m.bytes("hex")?;
    let negotiated: Vec<u16> = m.0.get("negotiated").and_then(Value::as_array).ok_or("missing negotiated")?
        .iter()
        .map(|x| x.as_u64().map(|n| n as u16).ok_or("negotiated: not numbers".to_string()))
        .collect::<R<_>>()?;
    if frame.len() < 6 {
        return Err("frame shorter than its header".into());
    }
    let header = Header::from_bytes(&frame[..6]).map_err(|e| format!("header: {e:?}"))?;
    let (_, tlvs) = parse_message_frame_with_tlvs(header, &mut frame[6..], &negotiated).map_err(|e| format!("{e:?}"))?;
    let tlvs = tlvs.unwrap_or_default();
    let (mut identity, mut error) = (Value::Null, Value::Null);
    for t in &tlvs {
        if (t.r#type.extension_type, t.r#type.field_type)
            == (EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, TLV_FIELD_TYPE_USER_IDENTITY)
        {
            match UserIdentity::from_tlv(t) {
                Ok(u) => identity = u.as_str().map_or(Value::Null, |s| json!(s)),
                Err(e) => error = json!(format!("{e:?}")),
            }
        }
    }
    Ok(json!({"tlvs": tlvs_json(&tlvs), "user_identity": identity, "user_identity_error": error}))
}

fn run_lines_with(f: impl Fn(&Value) -> R<Value>) -> R<()> {
    for line in io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        emit(match serde_json::from_str::<Value>(&line).map_err(|e| e.to_string()).and_then(|v| f(&v)) {
            Ok(v) => v,
            Err(e) => json!({"error": e}),
        });
    }
    Ok(())
}

/// Two transport halves (initiator -> responder direction) from an in-memory SRI handshake.
fn transport_pair(authority: &Secp256k1SecretKey) -> R<(TransportEncryptState, TransportDecryptState)> {
    let public = Secp256k1PublicKey::from(*authority);
    let init = Initiator::from_raw_k(public.into_bytes()).map_err(|e| format!("{e:?}"))?;
    let resp = Responder::from_authority_kp(&public.into_bytes(), &authority.into_bytes(), Duration::from_secs(3600))
        .map_err(|e| format!("{e:?}"))?;
    let (m1, hs_i) = Handshake::initiator(init).step_0().map_err(|e| format!("{e:?}"))?;
    let m1: [u8; 64] = m1.payload().try_into().map_err(|_| "msg1 size")?;
    let (m2, t_r) = Handshake::responder(resp).step_1(m1).map_err(|e| format!("{e:?}"))?;
    let m2: [u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE] = m2.payload().try_into().map_err(|_| "msg2 size")?;
    let t_i = hs_i.step_2(m2).map_err(|e| format!("{e:?}"))?;
    let (enc, _) = t_i.split();
    let (_, dec) = t_r.split();
    Ok((enc, dec))
}

fn share(seq: u32) -> SubmitSharesExtendedOwned {
    SubmitSharesExtendedOwned {
        channel_id: 2,
        sequence_number: seq,
        job_id: 7,
        nonce: 0x1234_5678,
        ntime: 1_700_000_000,
        version: 0,
        extranonce: binary_sv2::B032Owned::new(vec![0x11; 12]).expect("12 <= 32"),
    }
}

fn run_bench(m: &HashMap<String, String>) -> R<()> {
    let seconds: f64 = m.get("seconds").map(|s| s.parse().unwrap_or(1.0)).unwrap_or(1.0);
    let budget = Duration::from_secs_f64(seconds);
    let authority: Secp256k1SecretKey = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n".parse().map_err(|e| format!("{e}"))?;

    // 1. encode + encrypt a share-sized message (SubmitSharesExtended, 12-byte extranonce: 37-byte payload)
    let (mut enc, mut dec) = transport_pair(&authority)?;
    let mut encoder = NoiseEncoder::new();
    let mut wire: Vec<u8> = Vec::with_capacity(64 << 20);
    let mut n_enc: u64 = 0;
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..1000 {
            let frame = MessageFrame::from_message(share(n_enc as u32), MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED, 0, true)
                .map_err(|e| format!("{e:?}"))?;
            let out = encoder.encode_transport(frame, &mut enc).map_err(|e| format!("{e:?}"))?;
            if wire.len() < (60 << 20) {
                wire.extend_from_slice(out.as_ref());
            }
            n_enc += 1;
        }
    }
    let enc_rate = n_enc as f64 / start.elapsed().as_secs_f64();
    let frame_len = wire.len() as u64 / n_enc.max(1);
    let stored = (wire.len() as u64 / frame_len.max(1)) as usize;
    let wire = &wire[..stored * frame_len as usize];

    // 2. decrypt + decode the same frames (in order: the nonces must line up)
    let mut decoder = NoiseDecoder::new();
    let mut n_dec: u64 = 0;
    let mut pos = 0usize;
    let mut checksum: u64 = 0;
    let start = Instant::now();
    let mut state = Some(dec);
    while pos < wire.len() && start.elapsed() < budget {
        let st = state.take().ok_or("state")?;
        let buf = decoder.writable();
        let len = buf.len();
        buf.copy_from_slice(&wire[pos..pos + len]);
        pos += len;
        match decoder.next_transport_frame(st).map_err(|e| format!("{e:?}"))? {
            Decrypted::Frame(mut frame, st) => {
                let msg: SubmitSharesExtended = binary_sv2::from_bytes(frame.payload()).map_err(|e| format!("{e:?}"))?;
                checksum = checksum.wrapping_add(msg.sequence_number as u64);
                n_dec += 1;
                state = Some(st);
            }
            Decrypted::Incomplete(_, st) => state = Some(st),
        }
    }
    dec = state.ok_or("state")?;
    let _ = &mut dec;
    let dec_rate = n_dec as f64 / start.elapsed().as_secs_f64();

    // 3. responder handshakes/s: a new noise_sv2 Responder per connection (as SRI's pool does) + step_1
    let public = Secp256k1PublicKey::from(authority);
    let mut msgs = Vec::new();
    for _ in 0..2000 {
        let init = Initiator::from_raw_k(public.into_bytes()).map_err(|e| format!("{e:?}"))?;
        let (m1, _) = Handshake::initiator(init).step_0().map_err(|e| format!("{e:?}"))?;
        let m1: [u8; 64] = m1.payload().try_into().map_err(|_| "msg1 size")?;
        msgs.push(m1);
    }
    let mut n_hs: u64 = 0;
    let start = Instant::now();
    for m1 in msgs.iter() {
        if start.elapsed() >= budget {
            break;
        }
        let resp = Responder::from_authority_kp(&public.into_bytes(), &authority.into_bytes(), Duration::from_secs(3600))
            .map_err(|e| format!("{e:?}"))?;
        let _ = Handshake::responder(resp).step_1(*m1).map_err(|e| format!("{e:?}"))?;
        n_hs += 1;
    }
    let hs_rate = n_hs as f64 / start.elapsed().as_secs_f64();
    emit(json!({
        "impl": "SRI (noise_sv2 2.0.0, codec_sv2 7.0.0, mining_sv2 12.0.0)",
        "message": "SubmitSharesExtended, 12-byte extranonce",
        "encrypted_frame_bytes": frame_len,
        "encode_encrypt_per_s": enc_rate,
        "decrypt_decode_per_s": dec_rate,
        "decoded": n_dec,
        "checksum": checksum,
        "responder_handshakes_per_s": hs_rate,
    }));
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("usage: sv2-interop responder|initiator|encode|decode|samples|tlv-encode|tlv-decode|bench [--options]");
        std::process::exit(64);
    };
    let result = parse_args(&args[1..]).and_then(|m| match cmd.as_str() {
        "responder" => run_responder(&m),
        "initiator" => run_initiator(&m),
        "encode" => run_encode(),
        "decode" => run_decode(),
        "tlv-encode" => run_lines_with(|v| tlv_encode(v).map(|f| json!({"hex": hex(&f)}))),
        "tlv-decode" => run_lines_with(tlv_decode),
        "samples" => {
            for s in messages::samples() {
                emit(s);
            }
            Ok(())
        }
        "bench" => run_bench(&m),
        other => Err(format!("unknown subcommand {other}")),
    });
    if let Err(e) = result {
        eprintln!("sv2-interop: {e}");
        std::process::exit(1);
    }
}

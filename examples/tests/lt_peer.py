#!/usr/bin/python3
"""A stock BitTorrent peer for the interop tests: libtorrent (Debian python3-libtorrent), loopback only.

Seeds or downloads one .torrent (or, with --magnet, downloads what a magnet link names: the metadata
first, from the peers, over BEP 9), optionally connects to given peers, and prints JSON lines on stdout:
  {"event": "listening", "port": P}
  {"event": "metadata_received"}                (--magnet: the info dictionary arrived and verified)
  {"event": "status", "state": ..., "progress": f, "down": bytes, "up": bytes, "peers": [...]}
  {"event": "peer_disconnected", "ip": "...", "error": "...", "op": "..."}   (and "peer_error")
  {"event": "finished", "down": bytes}          (download mode: all pieces downloaded and hash-checked)
  {"event": "exit", "reason": "finished" | "timeout"}
Run it with the Debian interpreter, /usr/bin/python3: the module is built for it.
"""
import argparse
import json
import sys
import time

import libtorrent as lt


def emit(**kw):
    print(json.dumps(kw), flush=True)


def addr(s):
    host, port = s.rsplit(":", 1)
    return (host, int(port))


def peer_view(p):
    return {
        "ip": "%s:%d" % (p.ip[0], p.ip[1]),
        "client": p.client.decode("utf-8", "replace") if isinstance(p.client, bytes) else p.client,
        # flags from libtorrent's point of view
        "we_choked_by_them": bool(p.flags & lt.peer_info.choked),
        "we_interested": bool(p.flags & lt.peer_info.interesting),
        "they_interested": bool(p.flags & lt.peer_info.remote_interested),
        "they_choked_by_us": bool(p.flags & lt.peer_info.remote_choked),
        "extensions": bool(p.flags & lt.peer_info.supports_extensions),
        "down": p.total_download,
        "up": p.total_upload,
    }


def main():
    ap = argparse.ArgumentParser()
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--torrent")
    source.add_argument("--magnet")
    ap.add_argument("--save", required=True)
    ap.add_argument("--mode", choices=["seed", "download"], required=True)
    ap.add_argument("--peer", action="append", default=[], type=addr)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--hold", type=float, default=0.0, help="download mode: keep running this long after finishing")
    ap.add_argument("--interval", type=float, default=0.5, help="status line period")
    ap.add_argument("--encryption", choices=["default", "disabled"], default="disabled",
                    help="BEP 8/MSE policy: libtorrent's default tries an encrypted handshake first and falls "
                         "back to plaintext (the sample client speaks plaintext only)")
    args = ap.parse_args()

    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "user_agent": "lt_peer/" + lt.__version__,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.connect_notification,
    })
    if args.encryption == "disabled":
        ses.apply_settings({"out_enc_policy": int(lt.enc_policy.pe_disabled),
                            "in_enc_policy": int(lt.enc_policy.pe_disabled)})
    if args.magnet:
        atp = lt.parse_magnet_uri(args.magnet)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.save
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    h = ses.add_torrent(atp)

    deadline = time.time() + args.timeout
    port = 0
    while port == 0 and time.time() < deadline:
        port = ses.listen_port()
        time.sleep(0.02)
    emit(event="listening", port=port)

    finished_at = None
    last_status = 0.0
    last_connect = 0.0
    reason = "timeout"
    while time.time() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.peer_disconnected_alert):
                emit(event="peer_disconnected", ip="%s:%d" % (a.ip[0], a.ip[1]), error=a.error.message(),
                     op=str(a.op))
            elif isinstance(a, lt.peer_error_alert):
                emit(event="peer_error", ip="%s:%d" % (a.ip[0], a.ip[1]), error=a.error.message(), op=str(a.op))
            elif isinstance(a, lt.metadata_received_alert):
                emit(event="metadata_received")
            elif isinstance(a, lt.metadata_failed_alert):
                emit(event="metadata_failed", error=a.error.message())
            elif isinstance(a, lt.hash_failed_alert):
                emit(event="hash_failed", piece=a.piece_index)
        st = h.status()
        checking = st.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
        now = time.time()
        if args.peer and not checking and st.num_peers == 0 and now - last_connect > 1.0:
            for p in args.peer:
                h.connect_peer(p)
            last_connect = now
        if now - last_status >= args.interval:
            emit(event="status", state=str(st.state), progress=st.progress, down=st.total_payload_download,
                 up=st.total_payload_upload, peers=[peer_view(p) for p in h.get_peer_info()])
            last_status = now
        if args.mode == "download" and finished_at is None and st.is_seeding:
            finished_at = now
            emit(event="finished", down=st.total_payload_download)
        if finished_at is not None and now - finished_at >= args.hold:
            reason = "finished"
            break
        time.sleep(0.05)
    st = h.status()
    emit(event="status", state=str(st.state), progress=st.progress, down=st.total_payload_download,
         up=st.total_payload_upload, peers=[peer_view(p) for p in h.get_peer_info()])
    emit(event="exit", reason=reason)
    return 0 if (reason == "finished" or args.mode == "seed") else 2


if __name__ == "__main__":
    sys.exit(main())

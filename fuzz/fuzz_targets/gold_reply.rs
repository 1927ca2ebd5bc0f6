//! Gold's replies as they come off the socket: [`unframe`] (HTTP head and Gold's chunking),
//! then [`parse_reply`] (the SSSRMAP envelopes).
//!
//! Properties besides "no panic":
//! - `unframe` gives back exactly the pieces a well-formed reply was framed from, and every
//!   piece it returns of arbitrary bytes is a part of the input;
//! - a parsed reply has a three-character status code, its row count is the sum of its pieces'
//!   rows, and its `Count` the sum of theirs.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use roster::gold::proto::{parse_reply, unframe};
use roster::gold::xml;

/// A well-formed reply framed from these pieces, with or without CRLF after each.
#[derive(Arbitrary, Debug)]
struct Framed {
    pieces: Vec<String>,
    crlf: bool,
}

// The first byte chooses: even, the rest is whatever a server (or something pretending to be
// one) sends; odd, the rest makes a [`Framed`] reply.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw_reply(rest);
    } else if let Ok(f) = Unstructured::new(rest).arbitrary::<Framed>() {
        framed(f.pieces, f.crlf);
    }
});

fn raw_reply(raw: &[u8]) {
    let Ok(pieces) = unframe(raw) else {
        return;
    };
    let text = std::str::from_utf8(raw).expect("unframe accepted bytes that are not UTF-8");
    for p in &pieces {
        assert!(!p.is_empty(), "an empty piece (0 ends the reply)");
        assert!(text.contains(p.as_str()), "piece {p:?} is not in the input");
    }
    check_reply(&pieces);
}

fn framed(pieces: Vec<String>, crlf: bool) {
    let pieces: Vec<String> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
    let mut raw = String::from("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n");
    for p in &pieces {
        raw.push_str(&format!("{:x}\r\n{p}", p.len()));
        if crlf {
            raw.push_str("\r\n");
        }
    }
    raw.push_str("0\r\n\r\n");
    let got = unframe(raw.as_bytes()).expect("a well-formed reply must unframe");
    assert_eq!(got, pieces, "unframe lost or changed a piece");
    check_reply(&got);
}

fn check_reply(pieces: &[String]) {
    let Ok(resp) = parse_reply(pieces) else {
        return;
    };
    assert_eq!(resp.code.len(), 3, "status code {:?}", resp.code);
    // What each piece holds, read the plain way.
    let mut rows = 0;
    let mut count: Option<u64> = None;
    for p in pieces {
        let env = xml::parse(p).expect("parse_reply read a piece xml::parse refuses");
        let r = env
            .find("Body")
            .and_then(|b| b.find("Response"))
            .expect("parse_reply read a piece without Body/Response");
        if let Some(d) = r.find("Data") {
            rows += d.elements().count();
        }
        if let Some(c) = r.find("Count") {
            let n = c.text_content().trim().parse::<u64>().unwrap_or(0);
            count = Some(count.unwrap_or(0).saturating_add(n));
        }
    }
    assert_eq!(resp.data.len(), rows, "rows lost or invented");
    assert_eq!(
        resp.count, count,
        "Count is not the sum of the pieces' counts"
    );
}

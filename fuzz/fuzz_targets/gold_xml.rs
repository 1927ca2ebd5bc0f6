//! The XML Roster speaks with Gold (`roster::gold::xml`, and request bodies from
//! `roster::gold::proto::Request`): replies are parsed with it, requests are written with it.
//!
//! Properties besides "no panic":
//! - parse → write → parse gives the same element (what Roster reads, it can write back);
//! - write → parse of any element built from arbitrary text and attribute values gives it back:
//!   escaping is complete, so no value can close its element or open another;
//! - a request body with arbitrary (hostile) names and values reads back field for field: a
//!   user's description cannot inject a `<Set>` or `<Where>` into what Roster signs and sends.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use roster::gold::proto::{Request, Where};
use roster::gold::xml::{self, Element, Node};

/// An element tree; names are made of letters so they are valid XML names.
#[derive(Arbitrary, Debug)]
struct Built {
    name: u16,
    attrs: Vec<(u16, String)>,
    children: Vec<Child>,
}

#[derive(Arbitrary, Debug)]
enum Child {
    Text(String),
    Element(Built),
}

#[derive(Arbitrary, Debug)]
struct Req {
    action: String,
    actor: String,
    objects: Vec<String>,
    gets: Vec<String>,
    sets: Vec<(String, String)>,
    wheres: Vec<(String, String, Option<String>)>,
    options: Vec<(String, String)>,
    chunking: bool,
}

// The first byte chooses: 0 mod 3, the rest is a document (text, as Gold would send);
// 1, an element tree; 2, a request.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    match mode % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                reparse(text);
            }
        }
        1 => {
            if let Ok(b) = u.arbitrary::<Built>() {
                written(build(b));
            }
        }
        _ => {
            if let Ok(r) = u.arbitrary::<Req>() {
                request(r);
            }
        }
    }
});

fn written(e: Element) {
    if depth(&e) > 64 {
        return;
    }
    let xml = e.to_xml();
    let back = xml::parse(&xml).unwrap_or_else(|err| panic!("{err}: {xml}"));
    assert_eq!(back, e, "{xml}");
}

fn reparse(text: &str) {
    let Ok(e) = xml::parse(text) else {
        return;
    };
    check_names(&e);
    let xml = e.to_xml();
    let again = xml::parse(&xml).unwrap_or_else(|err| panic!("{err}: written as {xml}"));
    assert_eq!(again, e, "written as {xml}");
}

fn check_names(e: &Element) {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    assert!(!e.name.is_empty() && e.name.chars().all(name_char), "{e:?}");
    for (n, _) in &e.attrs {
        assert!(!n.is_empty() && n.chars().all(name_char), "{n:?}");
    }
    for c in &e.children {
        match c {
            Node::Element(child) => check_names(child),
            Node::Text(t) => assert!(!t.is_empty(), "an empty text node"),
        }
    }
}

fn name(n: u16) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    let mut n = usize::from(n);
    loop {
        s.push(char::from(LETTERS[n % LETTERS.len()]));
        n /= LETTERS.len();
        if n == 0 {
            return s;
        }
    }
}

/// The element as the parser would give it: adjacent texts are one, empty texts none.
fn build(b: Built) -> Element {
    let mut e = Element::new(&name(b.name));
    for (n, v) in b.attrs {
        e = e.attr(&name(n), &v);
    }
    for c in b.children {
        match c {
            Child::Text(t) if t.is_empty() => {}
            Child::Text(t) => match e.children.last_mut() {
                Some(Node::Text(prev)) => prev.push_str(&t),
                _ => e.children.push(Node::Text(t)),
            },
            Child::Element(c) => e.children.push(Node::Element(build(c))),
        }
    }
    e
}

fn depth(e: &Element) -> usize {
    e.elements().map(depth).max().map_or(0, |d| d + 1)
}

fn request(r: Req) {
    let req = Request {
        action: r.action,
        objects: r.objects,
        gets: r.gets,
        sets: r.sets,
        wheres: r
            .wheres
            .into_iter()
            .map(|(name, value, op)| Where { name, value, op })
            .collect(),
        options: r.options,
        chunking: r.chunking,
    };
    let body = req.body(&r.actor);
    let parsed = xml::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(parsed.name, "Body");
    let elements: Vec<&Element> = parsed.elements().collect();
    assert_eq!(elements.len(), 1, "{body}");
    let q = elements[0];
    assert_eq!(q.name, "Request");
    assert_eq!(q.get_attr("action"), Some(req.action.as_str()));
    assert_eq!(q.get_attr("actor"), Some(r.actor.as_str()));
    assert_eq!(q.get_attr("chunking").is_some(), req.chunking);
    let of = |kind: &str| q.elements().filter(|e| e.name == kind).collect::<Vec<_>>();
    let objects: Vec<String> = of("Object").iter().map(|e| e.text_content()).collect();
    assert_eq!(objects, req.objects);
    let gets: Vec<&str> = of("Get")
        .iter()
        .filter_map(|e| e.get_attr("name"))
        .collect();
    assert_eq!(gets, req.gets);
    let pairs = |kind: &str| -> Vec<(String, String)> {
        of(kind)
            .iter()
            .map(|e| {
                (
                    e.get_attr("name").unwrap_or("").to_string(),
                    e.text_content(),
                )
            })
            .collect()
    };
    assert_eq!(pairs("Set"), req.sets);
    assert_eq!(pairs("Option"), req.options);
    let wheres: Vec<Where> = of("Where")
        .iter()
        .map(|e| Where {
            name: e.get_attr("name").unwrap_or("").to_string(),
            value: e.text_content(),
            op: e.get_attr("op").map(str::to_string),
        })
        .collect();
    assert_eq!(wheres, req.wheres);
    let expected = req.objects.len() + req.gets.len() + req.sets.len() + req.wheres.len();
    assert_eq!(q.elements().count(), expected + req.options.len());
}

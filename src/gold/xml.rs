//! The little XML Gold speaks: elements, double-quoted attributes and text, no namespaces.
//! Written in the form libxml2 re-serializes (the form Gold signs): `<X></X>` for empty
//! elements, text escaping `&`, `<`, `>`, attribute values also `"`, tab, LF and CR.

/// An element with its attributes (in order) and children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: &str) -> Element {
        Element {
            name: name.into(),
            ..Default::default()
        }
    }

    pub fn attr(mut self, name: &str, value: &str) -> Element {
        self.attrs.push((name.into(), value.into()));
        self
    }

    pub fn text(mut self, text: &str) -> Element {
        if !text.is_empty() {
            self.children.push(Node::Text(text.into()));
        }
        self
    }

    pub fn child(mut self, e: Element) -> Element {
        self.children.push(Node::Element(e));
        self
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name.
    pub fn find(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    /// The concatenated text content (direct children only).
    pub fn text_content(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// Serializes in libxml2's form.
    pub fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (n, v) in &self.attrs {
            out.push(' ');
            out.push_str(n);
            out.push_str("=\"");
            escape_attr(v, out);
            out.push('"');
        }
        out.push('>');
        for c in &self.children {
            match c {
                Node::Element(e) => e.write(out),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    pub fn to_xml(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// Parses one document (an optional `<?xml …?>` declaration, then one root element).
pub fn parse(text: &str) -> Result<Element, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        text,
    };
    p.skip_ws();
    if p.starts_with("<?xml") {
        match text[p.i..].find("?>") {
            Some(end) => p.i += end + 2,
            None => return Err("unterminated XML declaration".into()),
        }
    }
    p.skip_ws();
    let root = p.element(0)?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(format!(
            "unexpected content after the root element at byte {}",
            p.i
        ));
    }
    Ok(root)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn starts_with(&self, p: &str) -> bool {
        self.s[self.i..].starts_with(p.as_bytes())
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || matches!(self.s[self.i], b'_' | b'-' | b'.' | b':'))
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a name at byte {start}"));
        }
        Ok(self.text[start..self.i].to_string())
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }

    fn element(&mut self, depth: usize) -> Result<Element, String> {
        if depth > 64 {
            return Err("elements nested too deep".into());
        }
        self.expect(b'<')?;
        let name = self.name()?;
        let mut e = Element::new(&name);
        loop {
            self.skip_ws();
            match self.s.get(self.i) {
                Some(b'/') => {
                    self.i += 1;
                    self.expect(b'>')?;
                    return Ok(e);
                }
                Some(b'>') => {
                    self.i += 1;
                    break;
                }
                Some(_) => {
                    let n = self.name()?;
                    self.skip_ws();
                    self.expect(b'=')?;
                    self.skip_ws();
                    let q = *self.s.get(self.i).ok_or("unterminated attribute")?;
                    if q != b'"' && q != b'\'' {
                        return Err(format!("attribute {n} is not quoted"));
                    }
                    self.i += 1;
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i] != q {
                        self.i += 1;
                    }
                    if self.i == self.s.len() {
                        return Err(format!("unterminated value of attribute {n}"));
                    }
                    let v = unescape(&self.text[start..self.i])?;
                    self.i += 1;
                    e.attrs.push((n, v));
                }
                None => return Err(format!("unterminated start tag of {name}")),
            }
        }
        loop {
            if self.i >= self.s.len() {
                return Err(format!("element {name} is not closed"));
            }
            if self.starts_with("</") {
                self.i += 2;
                let end = self.name()?;
                if end != name {
                    return Err(format!("</{end}> closes <{name}>"));
                }
                self.skip_ws();
                self.expect(b'>')?;
                return Ok(e);
            }
            if self.starts_with("<!--") {
                match self.text[self.i..].find("-->") {
                    Some(end) => self.i += end + 3,
                    None => return Err("unterminated comment".into()),
                }
                continue;
            }
            if self.s[self.i] == b'<' {
                let child = self.element(depth + 1)?;
                e.children.push(Node::Element(child));
                continue;
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i] != b'<' {
                self.i += 1;
            }
            let t = unescape(&self.text[start..self.i])?;
            match e.children.last_mut() {
                Some(Node::Text(prev)) => prev.push_str(&t),
                _ => e.children.push(Node::Text(t)),
            }
        }
    }
}

/// Resolves the five predefined entities and character references.
pub fn unescape(s: &str) -> Result<String, String> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';').ok_or("unterminated entity")?;
        let ent = &after[..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(h) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                n.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{ent};"))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_in_libxml2_form_and_reads_back() {
        let e = Element::new("Request")
            .attr("action", "Create")
            .attr("actor", "a\"b\t")
            .child(Element::new("Object").text("User"))
            .child(Element::new("Get").attr("name", "Name"))
            .child(
                Element::new("Set")
                    .attr("name", "Description")
                    .text("R&D <lab> 'x'"),
            );
        let xml = e.to_xml();
        assert_eq!(
            xml,
            "<Request action=\"Create\" actor=\"a&quot;b&#9;\"><Object>User</Object><Get name=\"Name\"></Get><Set name=\"Description\">R&amp;D &lt;lab&gt; 'x'</Set></Request>"
        );
        assert_eq!(parse(&xml).unwrap(), e);
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<A x='1'><B/><!-- c --><C>&#65;&#x42;&apos;</C></A>";
        let a = parse(doc).unwrap();
        assert_eq!(a.get_attr("x"), Some("1"));
        assert_eq!(a.find("C").unwrap().text_content(), "AB'");
        assert!(a.find("B").unwrap().children.is_empty());
        for bad in [
            "<A>",
            "<A></B>",
            "<A x=1></A>",
            "<A>&bogus;</A>",
            "<A></A><B></B>",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

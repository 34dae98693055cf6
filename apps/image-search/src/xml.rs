//! A small XML reader: elements, their text, nothing else (attributes, comments, declarations and
//! processing instructions are skipped). Enough for OpenCV's cascade files.

#[derive(Debug, Default)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Parses a document and returns its root element.
pub fn parse(doc: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut rest = doc;
    let mut line = 1;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            stack.last_mut().expect("the document node").text.push_str(rest);
            break;
        };
        let text = &rest[..lt];
        line += text.matches('\n').count();
        stack.last_mut().expect("the document node").text.push_str(text);
        rest = &rest[lt..];
        let skip_to = |rest: &str, end: &str| -> Result<usize, String> {
            rest.find(end).map(|i| i + end.len()).ok_or_else(|| format!("line {line}: unterminated `{}`", &rest[..rest.len().min(10)]))
        };
        if rest.starts_with("<!--") {
            let n = skip_to(rest, "-->")?;
            line += rest[..n].matches('\n').count();
            rest = &rest[n..];
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            let n = skip_to(rest, ">")?;
            rest = &rest[n..];
        } else if let Some(close) = rest.strip_prefix("</") {
            let n = skip_to(close, ">")?;
            let name = close[..n - 1].trim();
            let done = stack.pop().expect("not empty");
            if done.name != name || stack.is_empty() {
                return Err(format!("line {line}: `</{name}>` closes `<{}>`", done.name));
            }
            stack.last_mut().expect("checked").children.push(done);
            rest = &close[n..];
        } else {
            let n = skip_to(rest, ">")?;
            let tag = &rest[1..n - 1];
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or_else(|| format!("line {line}: empty tag"))?;
            let el = Element { name: name.to_string(), ..Element::default() };
            if self_closing {
                stack.last_mut().expect("not empty").children.push(el);
            } else {
                stack.push(el);
            }
            rest = &rest[n..];
        }
    }
    if stack.len() != 1 {
        return Err(format!("`<{}>` is never closed", stack.last().expect("not empty").name));
    }
    let mut doc = stack.pop().expect("the document node");
    match doc.children.len() {
        1 => Ok(doc.children.pop().expect("one")),
        n => Err(format!("expected one root element, found {n}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn elements_text_and_errors() {
        let root = super::parse("<?xml version=\"1.0\"?>\n<a x=\"1\"><!-- c --><b>\n 1 2</b><c/><_>3</_></a>").unwrap();
        assert_eq!(root.name, "a");
        assert_eq!(root.child("b").unwrap().text.split_whitespace().collect::<Vec<_>>(), ["1", "2"]);
        assert!(root.child("c").is_some());
        assert_eq!(root.children[2].text, "3");
        assert!(super::parse("<a><b></a>").is_err());
        assert!(super::parse("<a>").is_err());
        assert!(super::parse("<a></a><b></b>").is_err());
    }
}

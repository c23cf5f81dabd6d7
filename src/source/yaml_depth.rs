//! A linear pre-scan of YAML text for deep flow nesting (`[[[[…` or `{a: {a: …`), run before
//! the YAML parser. libyaml's scanner does work proportional to the flow depth for every token,
//! so 100 000 nested `{a: ` took minutes to reach serde's recursion limit (128 levels). Block
//! nesting needs indentation or `- ` per level, so it costs input bytes and stays linear.
//!
//! The scan follows YAML's lexical rules closely enough to count only real flow collections:
//! brackets inside quoted scalars, comments, block scalars (`|`, `>`) and plain scalars
//! (`see [docs`) are not counted. A document the scan passes may still be rejected by the
//! parser; a document it rejects would have failed serde's recursion limit anyway.

/// Deepest flow nesting accepted; serde's own limit on all nesting is 128.
pub const MAX_FLOW_DEPTH: usize = 128;

/// Err: the 1-based line at which the nesting passes [`MAX_FLOW_DEPTH`].
pub fn check(text: &str) -> Result<(), usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut i = 0;
    // Indentation of the current line, and of the line that opened a block scalar (whose
    // content lines, more indented, are literal text).
    let mut indent = 0usize;
    let mut block_scalar: Option<usize> = None;
    let mut at_line_start = true;
    // Whether the next token may start a node (a collection or a quoted scalar): at line
    // start, after an indicator (`- `, `? `, `: `, `key: `), an anchor or a tag, and anywhere
    // inside a flow collection after `[`, `{`, `,` or `:`.
    let mut node_start = true;
    while i < b.len() {
        if at_line_start {
            indent = b[i..].iter().take_while(|&&c| c == b' ').count();
            let rest = &b[i + indent..];
            let blank = rest.first().is_none_or(|&c| c == b'\n' || c == b'\r');
            if let Some(parent) = block_scalar {
                if depth == 0 && (blank || indent > parent) {
                    // A content line of the block scalar: skip it whole.
                    i = skip_line(b, i, &mut line);
                    continue;
                }
                block_scalar = None;
            }
            at_line_start = false;
            if depth == 0 {
                node_start = true;
            }
            i += indent;
            continue;
        }
        let c = b[i];
        let after_space = i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'\r');
        match c {
            b'\n' => {
                line += 1;
                at_line_start = true;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' if after_space => i = skip_to_eol(b, i),
            b'[' | b'{' if depth > 0 || node_start => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(line);
                }
                node_start = true;
                i += 1;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                node_start = false;
                i += 1;
            }
            b',' if depth > 0 => {
                node_start = true;
                i += 1;
            }
            b'"' | b'\'' if node_start => {
                i = skip_quoted(b, i, &mut line);
                node_start = false;
            }
            b'|' | b'>' if depth == 0 && node_start => {
                block_scalar = Some(indent);
                i = skip_to_eol(b, i);
            }
            _ => {
                // A plain token: up to a space (or, in a flow collection, an indicator).
                let start = i;
                while i < b.len() {
                    let c = b[i];
                    if matches!(c, b' ' | b'\t' | b'\n' | b'\r')
                        || (depth > 0 && matches!(c, b'[' | b']' | b'{' | b'}' | b','))
                    {
                        break;
                    }
                    i += 1;
                }
                let tok = &b[start..i];
                node_start = matches!(tok, b"-" | b"?" | b":" | b"---")
                    || tok.ends_with(b":")
                    || tok.starts_with(b"&")
                    || tok.starts_with(b"!");
                if i == start {
                    i += 1;
                }
            }
        }
    }
    Ok(())
}

fn skip_to_eol(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

fn skip_line(b: &[u8], i: usize, line: &mut usize) -> usize {
    let i = skip_to_eol(b, i);
    if i < b.len() {
        *line += 1;
        i + 1
    } else {
        i
    }
}

/// Past the quoted scalar starting at `i` (`"…"` with `\` escapes, `'…'` with `''`).
fn skip_quoted(b: &[u8], i: usize, line: &mut usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if q == b'"' => j += 1,
            b'\n' => *line += 1,
            c if c == q => {
                if q == b'\'' && b.get(j + 1) == Some(&b'\'') {
                    j += 1;
                } else {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_with_its_line() {
        assert_eq!(check(&"[".repeat(100_000)), Err(1));
        assert_eq!(
            check(&format!("a: 1\nb: {}", "{a: ".repeat(100_000))),
            Err(2)
        );
        assert_eq!(check(&format!("- &x {}", "[".repeat(200))), Err(1));
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert_eq!(check(&ok), Ok(()));
        assert_eq!(check(&format!("{ok}\n{ok}\n")), Ok(()));
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_text_do_not_count() {
        let open = "[".repeat(200);
        for text in [
            format!("a: \"{open}\"\n"),
            format!("a: '{open}'\n"),
            format!("a: 'it''s {open}'\n"),
            format!("a: see {open}\n"),
            format!("# {open}\nb: 1\n"),
            format!("a: |\n  {open}\n  more {open}\n\n  {open}\nb: 1\n"),
            format!("a: [x, \"{open}\", '{open}']\n"),
            format!("a: x{open}\n"),
        ] {
            assert_eq!(check(&text), Ok(()), "{text}");
        }
        // After a block scalar ends, counting resumes.
        assert_eq!(check(&format!("a: |\n  x\nb: {open}\n")), Err(3));
    }
}

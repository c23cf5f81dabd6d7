//! `$INCLUDE` in zone files, expanded here rather than by hickory's parser (which opens any path
//! it is given, FIFOs and files outside the zones directory alike, with no size limit). Each
//! directive is replaced by the included file's text before hickory sees the zone, so hickory
//! never opens a file; a map from the expanded text's lines back to `file:line` keeps error
//! messages pointing at the file that holds the problem.
//!
//! The scanner follows hickory's zone lexer (`zone_lex.rs`) closely enough to find every
//! `$INCLUDE` token hickory would act on: outside quoted strings, comments and `( … )` groups,
//! at the start of a line.

use std::path::{Path, PathBuf};

use super::SourceError;
use super::read::{self, MAX_FILE_BYTES};

/// Deepest chain of nested `$INCLUDE`s.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// A zone file with its includes expanded.
#[derive(Debug)]
pub struct Expanded {
    pub text: String,
    /// For each line of `text`: index into `names`, and the 1-based line there.
    lines: Vec<(u32, u32)>,
    names: Vec<String>,
}

impl Expanded {
    /// Text that has no `$INCLUDE`, named as one file (zone text built in memory).
    pub fn plain(name: &str, text: &str) -> Expanded {
        let n = text.lines().count().max(1) as u32;
        Expanded {
            text: text.to_string(),
            lines: (1..=n).map(|l| (0, l)).collect(),
            names: vec![name.to_string()],
        }
    }

    /// `file:line` of a 1-based line of the expanded text.
    pub fn location(&self, line: usize) -> String {
        match line.checked_sub(1).and_then(|i| self.lines.get(i)) {
            Some(&(f, l)) => format!("{}:{l}", self.names[f as usize]),
            None => format!("{}:{line}", self.names[0]),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Include,
    Data(String),
    Eol,
    Other,
}

struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

/// How the scan of a file ended.
#[derive(Clone, Copy, PartialEq)]
enum End {
    Clean,
    /// At a character hickory's lexer rejects: hickory's parse stops there with an error.
    Error,
    /// Inside a quoted string or a `( … )` group.
    Unclosed,
}

/// Tokens as hickory's lexer produces them, as far as `$INCLUDE` handling needs, and how the
/// scan ended.
fn lex(text: &str) -> (Vec<Token>, End) {
    #[derive(Clone, Copy)]
    enum S {
        StartLine,
        Rest,
        Comment(bool),
        Quote,
        List,
        Data(bool),
        Eol,
    }
    let mut it = text.char_indices().peekable();
    let mut s = S::StartLine;
    let mut out = Vec::new();
    let mut data = String::new();
    let mut data_start = 0;
    let tok = |tok, start, end| Token { tok, start, end };
    let end = 'scan: loop {
        let (pos, ch) = match it.peek() {
            Some(&(i, c)) => (i, Some(c)),
            None => (text.len(), None),
        };
        match s {
            S::StartLine => match ch {
                Some('\r' | '\n') => s = S::Eol,
                Some(c) if c.is_whitespace() => {
                    it.next();
                    out.push(tok(Tok::Other, pos, pos + c.len_utf8()));
                    s = S::Rest;
                }
                Some(_) => s = S::Rest,
                None => break End::Clean,
            },
            S::Rest => match ch {
                Some('@') => {
                    it.next();
                    out.push(tok(Tok::Other, pos, pos + 1));
                }
                Some('(') => {
                    it.next();
                    s = S::List;
                }
                Some('$') => {
                    it.next();
                    let mut name = String::new();
                    while let Some(&(_, c @ 'A'..='Z')) = it.peek() {
                        name.push(c);
                        it.next();
                    }
                    let end = it.peek().map(|&(i, _)| i).unwrap_or(text.len());
                    match name.as_str() {
                        "INCLUDE" => out.push(tok(Tok::Include, pos, end)),
                        "ORIGIN" | "TTL" => out.push(tok(Tok::Other, pos, end)),
                        _ => break End::Error,
                    }
                }
                Some('\r' | '\n') => s = S::Eol,
                Some('"') => {
                    it.next();
                    data.clear();
                    data_start = pos;
                    s = S::Quote;
                }
                Some(';') => s = S::Comment(false),
                Some(c) if c.is_whitespace() => {
                    it.next();
                }
                Some(c) if !c.is_control() && c != ')' => {
                    data.clear();
                    data_start = pos;
                    s = S::Data(false);
                }
                Some(_) => break End::Error,
                None => break End::Clean,
            },
            S::Quote => match ch {
                Some('"') => {
                    it.next();
                    out.push(tok(
                        Tok::Data(std::mem::take(&mut data)),
                        data_start,
                        pos + 1,
                    ));
                    s = S::Rest;
                }
                Some('\\') => {
                    it.next();
                    match it.peek().map(|&(_, c)| c) {
                        Some(c) if c.is_numeric() => {
                            // \DDD, decoded as hickory does.
                            let mut v = 0u32;
                            for shift in [16, 8, 0] {
                                match it.next().and_then(|(_, c)| c.to_digit(10)) {
                                    Some(d) => v += d << shift,
                                    None => break 'scan End::Error,
                                }
                            }
                            match char::from_u32(v) {
                                Some(c) => data.push(c),
                                None => break End::Error,
                            }
                        }
                        Some(c) if !c.is_control() => {
                            it.next();
                            data.push(c);
                        }
                        _ => break End::Error,
                    }
                }
                Some(c) => {
                    it.next();
                    data.push(c);
                }
                None => break End::Unclosed,
            },
            S::Comment(list) => match ch {
                Some('\r' | '\n') => s = if list { S::List } else { S::Eol },
                Some(_) => {
                    it.next();
                }
                None if list => break End::Unclosed,
                None => break End::Clean,
            },
            S::List => match ch {
                Some(';') => {
                    it.next();
                    s = S::Comment(true);
                }
                Some(')') => {
                    it.next();
                    out.push(tok(Tok::Other, pos, pos + 1));
                    s = S::Rest;
                }
                Some(c) if c.is_whitespace() => {
                    it.next();
                }
                Some(c) if !c.is_control() => s = S::Data(true),
                None => break End::Unclosed,
                _ => break End::Error,
            },
            S::Data(list) => match ch {
                Some(')') if !list => break End::Error,
                Some(c) if c.is_whitespace() || c == ')' || c == ';' => {
                    if list {
                        s = S::List;
                    } else {
                        out.push(tok(Tok::Data(data.clone()), data_start, pos));
                        s = S::Rest;
                    }
                }
                Some(c) if !c.is_control() => {
                    it.next();
                    data.push(c);
                }
                Some(_) => break End::Error,
                None => {
                    if list {
                        break End::Unclosed;
                    }
                    out.push(tok(Tok::Data(data.clone()), data_start, pos));
                    break End::Clean;
                }
            },
            S::Eol => match ch {
                Some('\r') => {
                    it.next();
                }
                Some('\n') => {
                    it.next();
                    out.push(tok(Tok::Eol, pos, pos + 1));
                    s = S::StartLine;
                }
                _ => break End::Error,
            },
        }
    };
    (out, end)
}

struct Ctx<'a> {
    /// The zones directory, canonical: every included file must resolve inside it.
    root: &'a Path,
    out: String,
    lines: Vec<(u32, u32)>,
    names: Vec<String>,
    /// Canonical paths of the files being expanded (the include chain), to refuse cycles.
    stack: Vec<PathBuf>,
    /// Every included file, as written (resolved against its includer), for the file watcher.
    watched: &'a mut Vec<PathBuf>,
}

impl Ctx<'_> {
    /// Appends whole lines of file `f`, the first being line `first`.
    fn push(&mut self, f: u32, first: usize, seg: &str) {
        if seg.is_empty() {
            return;
        }
        self.out.push_str(seg);
        if !seg.ends_with('\n') {
            self.out.push('\n');
        }
        let n = seg.matches('\n').count() + usize::from(!seg.ends_with('\n'));
        self.lines
            .extend((first..first + n).map(|l| (f, u32::try_from(l).unwrap_or(u32::MAX))));
    }

    fn expand(&mut self, path: &Path, text: &str) -> Result<(), SourceError> {
        let f = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let name = path.display().to_string();
        self.names.push(name.clone());
        let (toks, how) = lex(text);
        let loc = |line: usize| format!("{name}:{line}");
        // Byte offset copied so far, and its line number.
        let (mut done, mut line) = (0usize, 1usize);
        let mut i = 0;
        while i < toks.len() {
            if toks[i].tok != Tok::Include {
                i += 1;
                continue;
            }
            let start = toks[i].start;
            let here = line + text[done..start].matches('\n').count();
            if i > 0 && toks[i - 1].tok != Tok::Eol {
                return Err(SourceError::new(loc(here), "$INCLUDE must start a line"));
            }
            let mut j = i + 1;
            let mut args = Vec::new();
            while let Some(t) = toks.get(j) {
                match &t.tok {
                    Tok::Eol => break,
                    Tok::Data(s) => args.push(s.clone()),
                    _ => {
                        return Err(SourceError::new(loc(here), "$INCLUDE takes one file name"));
                    }
                }
                j += 1;
            }
            let end = toks.get(j).map(|t| t.end).unwrap_or(text.len());
            let file = match args.as_slice() {
                [f] => f.clone(),
                [] => return Err(SourceError::new(loc(here), "$INCLUDE needs a file name")),
                [_, origin, ..] => {
                    return Err(SourceError::new(
                        loc(here),
                        format!("$INCLUDE with an origin ({origin}) is not supported"),
                    ));
                }
            };
            self.push(f, line, &text[done..start]);
            self.include(path, &file, &loc(here))?;
            line = here + 1;
            done = end;
            i = j + 1;
        }
        if how == End::Error && text[done..].contains("$INCLUDE") {
            // hickory's parse stops at the syntax error before this; say so rather than leave
            // a directive unexpanded.
            let at = text[done..].find("$INCLUDE").unwrap_or(0) + done;
            return Err(SourceError::new(
                loc(line + text[done..at].matches('\n').count()),
                "$INCLUDE after a syntax error in the lines above",
            ));
        }
        self.push(f, line, &text[done..]);
        if how == End::Unclosed && self.stack.len() > 1 {
            // Inlined, the group would run on into the including file.
            let last = line + text[done..].matches('\n').count();
            return Err(SourceError::new(
                loc(last),
                "unclosed \"…\" or ( … ) at the end of an included file",
            ));
        }
        Ok(())
    }

    fn include(&mut self, includer: &Path, file: &str, at: &str) -> Result<(), SourceError> {
        let err = |m: String| SourceError::new(at, format!("$INCLUDE {file}: {m}"));
        // As hickory resolves it: relative to the including file's directory.
        let target = includer
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(file);
        self.watched.push(target.clone());
        let canon = std::fs::canonicalize(&target)
            .map_err(|e| err(format!("cannot read {}: {e}", target.display())))?;
        if !canon.starts_with(self.root) {
            return Err(err(format!(
                "{} is outside the zones directory {}",
                canon.display(),
                self.root.display()
            )));
        }
        if self.stack.contains(&canon) {
            return Err(err(format!("{} includes itself", canon.display())));
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "$INCLUDEs nested deeper than {MAX_INCLUDE_DEPTH}"
            )));
        }
        let budget = MAX_FILE_BYTES.saturating_sub(self.out.len() as u64);
        let text = read::read_text(&canon, budget).map_err(|e| {
            err(format!(
                "{}: {e}{}",
                target.display(),
                if budget < MAX_FILE_BYTES {
                    " (a zone file and all it includes share one limit)"
                } else {
                    ""
                }
            ))
        })?;
        self.stack.push(canon);
        let r = self.expand(&target, &text);
        self.stack.pop();
        r
    }
}

/// Expands the `$INCLUDE`s of zone file `path` (text `text`). `root` is the zones directory;
/// included files must resolve (symlinks followed) inside it. Every included path is added to
/// `watched`, also when expansion fails, so fixing it triggers a reload.
pub fn expand(
    path: &Path,
    text: &str,
    root: &Path,
    watched: &mut Vec<PathBuf>,
) -> Result<Expanded, SourceError> {
    let root = std::fs::canonicalize(root).map_err(|e| {
        SourceError::new(
            root.display().to_string(),
            format!("cannot read directory: {e}"),
        )
    })?;
    let mut ctx = Ctx {
        root: &root,
        out: String::new(),
        lines: Vec::new(),
        names: Vec::new(),
        stack: vec![std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())],
        watched,
    };
    ctx.expand(path, text)?;
    Ok(Expanded {
        text: ctx.out,
        lines: ctx.lines,
        names: ctx.names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    fn run(dir: &Path, name: &str) -> (Result<Expanded, SourceError>, Vec<PathBuf>) {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).expect("read");
        let mut watched = Vec::new();
        (expand(&path, &text, dir, &mut watched), watched)
    }

    #[test]
    fn expands_nested_includes_and_maps_lines_back() {
        let dir = setup(&[
            (
                "z.zone",
                "a IN A 192.0.2.1\n$INCLUDE sub/b.inc ; comment\nc IN A 192.0.2.3\n",
            ),
            ("sub/b.inc", "b IN A 192.0.2.2\n$INCLUDE \"d.inc\"\n"),
            ("sub/d.inc", "; d\nd IN A 192.0.2.4"),
        ]);
        let (e, watched) = run(dir.path(), "z.zone");
        let e = e.expect("expands");
        assert_eq!(
            e.text,
            "a IN A 192.0.2.1\nb IN A 192.0.2.2\n; d\nd IN A 192.0.2.4\nc IN A 192.0.2.3\n"
        );
        let d = dir.path().display();
        assert_eq!(e.location(1), format!("{d}/z.zone:1"));
        assert_eq!(e.location(2), format!("{d}/sub/b.inc:1"));
        assert_eq!(e.location(4), format!("{d}/sub/d.inc:2"));
        assert_eq!(e.location(5), format!("{d}/z.zone:3"));
        assert_eq!(watched.len(), 2);
    }

    #[test]
    fn quoted_commented_and_grouped_dollars_are_not_directives() {
        let text = "; $INCLUDE /etc/passwd\n@ IN TXT \"\n$INCLUDE /etc/passwd\"\n@ IN SOA a b (\n$INCLUDE\n 1 2 3 4 5 )\n";
        let dir = setup(&[("z.zone", text)]);
        let (e, _) = run(dir.path(), "z.zone");
        assert_eq!(e.expect("nothing to expand").text, text);
    }

    #[test]
    fn refuses_escapes_cycles_fifos_and_misplaced_directives() {
        let outer = tempfile::tempdir().expect("tempdir");
        std::fs::write(outer.path().join("outside.zone"), "x IN A 192.0.2.9\n").expect("write");
        let zones = outer.path().join("zones");
        std::fs::create_dir(&zones).expect("mkdir");
        std::os::unix::fs::symlink(outer.path().join("outside.zone"), zones.join("link.inc"))
            .expect("symlink");
        let outside = outer.path().join("outside.zone");
        for (text, want) in [
            (
                "a IN A 192.0.2.1\n$INCLUDE ../outside.zone\n",
                "z.zone:2: $INCLUDE ../outside.zone: ",
            ),
            (
                &format!("$INCLUDE {}\n", outside.display()),
                "z.zone:1: $INCLUDE /",
            ),
            ("$INCLUDE link.inc\n", "z.zone:1: $INCLUDE link.inc: "),
        ] {
            std::fs::write(zones.join("z.zone"), text).expect("write");
            let (e, _) = run(&zones, "z.zone");
            let e = e.expect_err("escapes").to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("outside the zones directory"), "{e}");
        }
        std::fs::write(zones.join("self.inc"), "$INCLUDE self.inc\n").expect("write");
        std::fs::write(zones.join("z.zone"), "$INCLUDE self.inc\n").expect("write");
        let e = run(&zones, "z.zone").0.expect_err("cycle").to_string();
        assert!(
            e.contains("self.inc:1: $INCLUDE self.inc: ") && e.contains("includes itself"),
            "{e}"
        );
        let fifo =
            std::ffi::CString::new(zones.join("pipe.inc").to_str().expect("utf-8")).expect("c");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(zones.join("z.zone"), "\n$INCLUDE pipe.inc\n").expect("write");
        let (e, watched) = run(&zones, "z.zone");
        let e = e.expect_err("fifo").to_string();
        assert!(
            e.contains("z.zone:2: $INCLUDE pipe.inc: ") && e.contains("FIFO"),
            "{e}"
        );
        assert_eq!(
            watched,
            vec![zones.join("pipe.inc")],
            "watched even when refused"
        );
        std::fs::write(zones.join("z.zone"), "$TTL 300 $INCLUDE x.inc\n").expect("write");
        let e = run(&zones, "z.zone").0.expect_err("misplaced").to_string();
        assert!(e.contains("must start a line"), "{e}");
        std::fs::write(zones.join("z.zone"), "$INCLUDE x.inc example.org.\n").expect("write");
        let e = run(&zones, "z.zone").0.expect_err("origin").to_string();
        assert!(e.contains("origin (example.org.) is not supported"), "{e}");
    }

    #[test]
    fn parse_errors_in_included_files_name_that_file_and_line() {
        let soa = "$TTL 300\n@ IN SOA ns1 host 1 7200 3600 1209600 60\n@ IN NS ns1\n";
        let dir = setup(&[
            (
                "example.com.zone",
                &format!("{soa}$INCLUDE sub/hosts.inc\nok IN A 192.0.2.1\n"),
            ),
            ("sub/hosts.inc", "ns1 IN A 192.0.2.53\nbad IN A 300.1.2.3\n"),
        ]);
        let (loaded, errors) = super::super::file::load_dir(dir.path());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let want = format!("{}/sub/hosts.inc:2: ", dir.path().display());
        assert!(errors[0].to_string().starts_with(&want), "{errors:?}");
        assert!(loaded.files.contains(&dir.path().join("sub/hosts.inc")));
        std::fs::write(dir.path().join("sub/hosts.inc"), "ns1 IN A 192.0.2.53\n").expect("write");
        let (loaded, errors) = super::super::file::load_dir(dir.path());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(loaded.zone_files[0].records.len(), 4);
    }
}

//! Names from images and archives on a terminal or in a pipe: a name may
//! hold any byte but `/` and NUL, including newlines (which would forge
//! output lines) and terminal escape sequences. Like GNU `ls
//! --quoting-style`, names are escaped before they are printed.

use std::io::IsTerminal;

/// How names are printed (`--quoting-style`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotingStyle {
    /// Raw bytes, exactly as stored (only safe when the names are trusted).
    Literal,
    /// C-like backslash escapes (`\n`, `\033`, `\\`): one name per line, and
    /// a script undoes it with `printf '%b'` (the default in a pipe).
    Escape,
    /// Shell quoting that pastes back into a shell, `$'…'` for control
    /// characters (the default on a terminal, as GNU ls).
    ShellEscape,
}

impl QuotingStyle {
    /// The style asked for, else the default for standard output: shell
    /// quoting on a terminal, backslash escapes in a pipe.
    pub fn or_default(style: Option<QuotingStyle>) -> QuotingStyle {
        style.unwrap_or(if std::io::stdout().is_terminal() {
            QuotingStyle::ShellEscape
        } else {
            QuotingStyle::Escape
        })
    }

    /// `name` as this style prints it.
    pub fn quote(self, name: &[u8]) -> Vec<u8> {
        match self {
            QuotingStyle::Literal => name.to_vec(),
            QuotingStyle::Escape => escape(name),
            QuotingStyle::ShellEscape => shell_escape(name),
        }
    }
}

/// Backslash escapes: `\\`, `\a \b \t \n \v \f \r`, other control bytes,
/// DEL and invalid UTF-8 as three-digit octal `\ooo`. Valid UTF-8 text is
/// kept (except control characters).
pub fn escape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut buf = [0u8; 4];
            match c {
                '\\' => out.extend_from_slice(b"\\\\"),
                '\x07' => out.extend_from_slice(b"\\a"),
                '\x08' => out.extend_from_slice(b"\\b"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\x0b' => out.extend_from_slice(b"\\v"),
                '\x0c' => out.extend_from_slice(b"\\f"),
                '\r' => out.extend_from_slice(b"\\r"),
                c if c.is_control() => c.encode_utf8(&mut buf).bytes().for_each(|b| octal(&mut out, b)),
                c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
        chunk.invalid().iter().for_each(|&b| octal(&mut out, b));
    }
    out
}

fn octal(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(format!("\\{b:03o}").as_bytes());
}

/// Shell quoting: unchanged when every byte is safe in a shell word;
/// otherwise `'…'` around the printable parts and `$'\n'`-style words for
/// control characters and invalid UTF-8, concatenated (as GNU ls does).
pub fn shell_escape(name: &[u8]) -> Vec<u8> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"%+,-./:=@_^".contains(&b);
    if !name.is_empty() && name.iter().all(|&b| safe(b)) {
        return name.to_vec();
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    let mut quoted = false;
    let mut open = |out: &mut Vec<u8>, want: bool| {
        if want != quoted {
            out.push(b'\'');
            quoted = want;
        }
    };
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut buf = [0u8; 4];
            if c == '\'' {
                open(&mut out, false);
                out.extend_from_slice(b"\\'");
            } else if c.is_control() {
                open(&mut out, false);
                out.extend_from_slice(b"$'");
                let e = escape(c.encode_utf8(&mut buf).as_bytes());
                out.extend_from_slice(&e);
                out.push(b'\'');
            } else {
                open(&mut out, true);
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        for &b in chunk.invalid() {
            open(&mut out, false);
            out.extend_from_slice(b"$'");
            octal(&mut out, b);
            out.push(b'\'');
        }
    }
    open(&mut out, false);
    if out.is_empty() {
        out.extend_from_slice(b"''");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes [`escape`] the way `printf '%b'` does.
    fn unescape(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s[i] != b'\\' {
                out.push(s[i]);
                i += 1;
                continue;
            }
            let c = s[i + 1];
            i += 2;
            out.push(match c {
                b'\\' => b'\\',
                b'a' => 7,
                b'b' => 8,
                b't' => b'\t',
                b'n' => b'\n',
                b'v' => 0x0b,
                b'f' => 0x0c,
                b'r' => b'\r',
                _ => {
                    let v = u8::from_str_radix(std::str::from_utf8(&s[i - 1..i + 2]).unwrap(), 8).unwrap();
                    i += 2;
                    v
                }
            });
        }
        out
    }

    #[test]
    fn escape_hides_every_control_byte_and_round_trips() {
        let names: [&[u8]; 6] = [
            b"plain.txt",
            b"evil\nforged 100644 0 0 1 line",
            b"\x1b]0;title\x07\x1b[2J",
            b"back\\slash and \\n",
            "caf\u{e9} \u{85}".as_bytes(),
            b"bad\xff\xfeutf8\x7f",
        ];
        for n in names {
            let e = escape(n);
            assert!(e.iter().all(|&b| b >= 0x20 && b != 0x7f), "{e:?}");
            assert_eq!(unescape(&e), n, "{:?}", String::from_utf8_lossy(&e));
        }
        assert_eq!(escape(b"a\nb"), b"a\\nb");
        assert_eq!(escape(b"\x1b[2J"), b"\\033[2J");
    }

    #[test]
    fn shell_escape_quotes_like_gnu_ls() {
        assert_eq!(shell_escape(b"plain.txt"), b"plain.txt");
        assert_eq!(shell_escape(b"two words"), b"'two words'");
        assert_eq!(shell_escape(b"a\nb"), b"'a'$'\\n''b'");
        assert_eq!(shell_escape(b"it's"), b"'it'\\''s'");
        assert_eq!(shell_escape(b"\x1b"), b"$'\\033'");
        assert_eq!(shell_escape(b""), b"''");
        assert!(shell_escape(b"\x9b\xff").iter().all(|&b| (0x20..0x7f).contains(&b)));
    }
}

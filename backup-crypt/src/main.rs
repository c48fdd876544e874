//! backup-crypt: ciphertext-only backup and restore (not implemented yet; see the issue tracker).

fn main() {
    eprintln!("backup-crypt: not implemented yet");
    std::process::exit(8);
}

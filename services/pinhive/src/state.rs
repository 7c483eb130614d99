//! `pinhive state export|import`: offline backup and restore of an embedded deployment's data
//! dir, as one tar archive (stdout/stdin with `-`, so it can be piped through zstd or ssh):
//!
//! * `pinhive-state/files/<path>` — every file of the data dir outside the store, as is: the
//!   pin log, the control log, the access log (lock files left out);
//! * `pinhive-state/store/<keyspace>.kv` — each keyspace of the store, logically: its entries
//!   in key order from one snapshot, each `u32 key length, key, u32 value length, value` (big
//!   endian);
//! * `pinhive-state/manifest.json` — last: size and SHA-256 of every file and keyspace.
//!
//! The service must be stopped (the store's lock says so). An import restores into a new data
//! dir only, checks each piece against the manifest, then reads the restored store back and
//! compares each keyspace's digest with the manifest; on any failure it removes what it wrote.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pinhive_store::{EmbeddedStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const FORMAT: &str = "pinhive-state v1";
const ROOT: &str = "pinhive-state";

#[derive(Args, Debug)]
pub struct DataDir {
    /// The data directory of the embedded deployment.
    #[arg(long, env = "PINHIVE_DATA_DIR", default_value = "pinhive-data")]
    data_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Write a backup of a stopped embedded deployment (store, pin log, control and access
    /// logs) to FILE (`-`: stdout).
    Export {
        file: PathBuf,
        #[command(flatten)]
        dir: DataDir,
        /// Print the manifest (size and SHA-256 of every piece) as JSON on stdout (not with
        /// `-`: stdout is the archive then).
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup from FILE (`-`: stdin) into a new data dir (absent or empty),
    /// verified against the backup's manifest.
    Import {
        file: PathBuf,
        #[command(flatten)]
        dir: DataDir,
        /// Print the verified manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
struct Manifest {
    format: String,
    pinhive_version: String,
    created: String,
    files: Vec<Piece>,
    keyspaces: Vec<Piece>,
}

/// A file (path relative to the data dir) or keyspace (name) of the backup.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Piece {
    name: String,
    bytes: u64,
    /// Entries of a keyspace (absent for files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entries: Option<u64>,
    sha256: String,
}

pub fn run(command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Export { file, dir, json } => {
            if json && file.as_os_str() == "-" {
                bail!("--json prints on stdout, where `-` writes the archive: give a FILE");
            }
            let manifest = if file.as_os_str() == "-" {
                export(&dir.data_dir, io::stdout().lock())?
            } else {
                // Written beside FILE and renamed onto it once complete: a failed export
                // leaves no partial archive (the temporary file goes when dropped), and an
                // earlier backup at FILE stays until the new one is whole.
                let parent = match file.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                let out = tempfile::Builder::new()
                    .prefix(".pinhive-export-")
                    .tempfile_in(parent)
                    .with_context(|| format!("creating a file in {}", parent.display()))?;
                let manifest = export(&dir.data_dir, BufWriter::new(out.as_file()))?;
                out.as_file().sync_all()?;
                out.persist(&file)
                    .with_context(|| format!("writing {}", file.display()))?;
                manifest
            };
            eprintln!("{}", describe("exported", &manifest));
            if json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            }
            Ok(())
        }
        StateCommand::Import { file, dir, json } => {
            let input: Box<dyn Read> = if file.as_os_str() == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(File::open(&file).with_context(|| format!("opening {}", file.display()))?)
            };
            let manifest = import_into_new(&dir.data_dir, BufReader::new(input))?;
            eprintln!("{}", describe("imported and verified", &manifest));
            if json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            }
            Ok(())
        }
    }
}

fn describe(what: &str, manifest: &Manifest) -> String {
    let entries: u64 = manifest.keyspaces.iter().filter_map(|k| k.entries).sum();
    let file_bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    let store_bytes: u64 = manifest.keyspaces.iter().map(|k| k.bytes).sum();
    format!(
        "{what}: {} keyspaces, {entries} store entries ({store_bytes} bytes), {} log files \
         ({file_bytes} bytes)",
        manifest.keyspaces.len(),
        manifest.files.len()
    )
}

fn open_store(data_dir: &Path) -> anyhow::Result<EmbeddedStore> {
    match EmbeddedStore::open(&data_dir.join("store")) {
        Err(StoreError::Locked { path }) => bail!(
            "{path} is in use by a running pinhive: stop it first (SIGTERM); state export and \
             import work offline"
        ),
        other => Ok(other.context("opening the store")?),
    }
}

/// Files of the data dir outside `store/`, lock files left out, sorted.
fn data_files(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![data_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let relative = path.strip_prefix(data_dir)?.to_path_buf();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if relative != Path::new("store") {
                    pending.push(path);
                }
            } else if kind.is_file() && !entry.file_name().eq_ignore_ascii_case("lock") {
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (u64, String) {
        (self.bytes, format!("{:x}", self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

type Entry = Result<(Vec<u8>, Vec<u8>), StoreError>;

fn encode_entry(key: &[u8], value: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let length = |n: usize| {
        u32::try_from(n)
            .map(u32::to_be_bytes)
            .map_err(|_| io::Error::other("an entry over 4 GiB"))
    };
    out.extend_from_slice(&length(key.len())?);
    out.extend_from_slice(key);
    out.extend_from_slice(&length(value.len())?);
    out.extend_from_slice(value);
    Ok(())
}

/// A keyspace's entries as the bytes of its archive member.
struct EntryReader<I> {
    entries: I,
    buffer: Vec<u8>,
    at: usize,
}

impl<I: Iterator<Item = Entry>> Read for EntryReader<I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buffer.len() {
            self.buffer.clear();
            self.at = 0;
            match self.entries.next() {
                None => return Ok(0),
                Some(Err(error)) => return Err(io::Error::other(error)),
                Some(Ok((key, value))) => encode_entry(&key, &value, &mut self.buffer)?,
            }
        }
        let n = buf.len().min(self.buffer.len() - self.at);
        buf[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The entries of a keyspace member, parsed as they are read.
struct EntryParser<R> {
    reader: R,
}

impl<R: Read> Iterator for EntryParser<R> {
    type Item = Entry;
    fn next(&mut self) -> Option<Entry> {
        let mut length = [0u8; 4];
        match read_full(&mut self.reader, &mut length) {
            Ok(0) => return None,
            Ok(4) => {}
            Ok(_) => return Some(Err(corrupt("an entry cut short".into()))),
            Err(error) => return Some(Err(corrupt(error.to_string()))),
        }
        let entry = (|| {
            let key = read_part(&mut self.reader, length)?;
            self.reader
                .read_exact(&mut length)
                .map_err(|e| corrupt(format!("an entry cut short: {e}")))?;
            let value = read_part(&mut self.reader, length)?;
            Ok((key, value))
        })();
        Some(entry)
    }
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt {
        what: "backup",
        reason,
    }
}

fn read_part(reader: &mut impl Read, length: [u8; 4]) -> Result<Vec<u8>, StoreError> {
    let length = u32::from_be_bytes(length) as usize;
    let mut bytes = Vec::new();
    // Bounded by what the member holds, not by the length it claims.
    reader
        .take(length as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(e.to_string()))?;
    if bytes.len() != length {
        return Err(corrupt("an entry cut short".into()));
    }
    Ok(bytes)
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn export(data_dir: &Path, out: impl Write) -> anyhow::Result<Manifest> {
    if !data_dir.join("store").is_dir() {
        bail!(
            "{} has no store: not the data dir of an embedded deployment",
            data_dir.display()
        );
    }
    let store = open_store(data_dir)?;
    let mut archive = tar::Builder::new(out);
    let mut manifest = Manifest {
        format: FORMAT.into(),
        pinhive_version: env!("CARGO_PKG_VERSION").into(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ..Manifest::default()
    };
    for relative in data_files(data_dir)? {
        let path = data_dir.join(&relative);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let length = file.metadata()?.len();
        let mut reader = Hashing::new(file.take(length));
        let mut header = tar::Header::new_gnu();
        header.set_size(length);
        header.set_mode(0o644);
        archive.append_data(
            &mut header,
            Path::new(ROOT).join("files").join(&relative),
            &mut reader,
        )?;
        let (bytes, sha256) = reader.finish();
        if bytes != length {
            bail!(
                "{} changed while it was read: is pinhive running?",
                path.display()
            );
        }
        manifest.files.push(Piece {
            name: relative.to_string_lossy().into_owned(),
            bytes,
            entries: None,
            sha256,
        });
    }
    let snapshot = store.backup_snapshot();
    for name in snapshot.keyspaces() {
        // The member's size goes first in its header: one pass to count, one to write, both
        // from the same snapshot.
        let (mut bytes, mut entries) = (0u64, 0u64);
        for entry in snapshot.entries(&name)? {
            let (key, value) = entry?;
            bytes += 8 + key.len() as u64 + value.len() as u64;
            entries += 1;
        }
        let mut reader = Hashing::new(EntryReader {
            entries: snapshot.entries(&name)?,
            buffer: Vec::new(),
            at: 0,
        });
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes);
        header.set_mode(0o644);
        archive.append_data(
            &mut header,
            Path::new(ROOT).join("store").join(format!("{name}.kv")),
            &mut reader,
        )?;
        let (written, sha256) = reader.finish();
        if written != bytes {
            bail!("keyspace {name} changed between two reads of one snapshot");
        }
        manifest.keyspaces.push(Piece {
            name,
            bytes,
            entries: Some(entries),
            sha256,
        });
    }
    let text = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    archive.append_data(
        &mut header,
        Path::new(ROOT).join("manifest.json"),
        text.as_slice(),
    )?;
    archive.into_inner()?.flush()?;
    Ok(manifest)
}

/// Restores into `data_dir`, which must be absent or empty. The archive is restored into a
/// sibling directory of its own (`<data_dir>.importing-<pid>`), verified, and only then renamed
/// onto `data_dir`: a killed import never leaves a half-restored data dir behind, and a failed
/// one removes only its own directory — never files a service started on `data_dir` meanwhile
/// wrote (the rename then fails: `data_dir` is no longer empty).
fn import_into_new(data_dir: &Path, input: impl Read) -> anyhow::Result<Manifest> {
    if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
        bail!(
            "{} is not empty: restore into a new data dir (absent or empty)",
            data_dir.display()
        );
    }
    let mut staging = data_dir.as_os_str().to_owned();
    staging.push(format!(".importing-{}", std::process::id()));
    let staging = PathBuf::from(staging);
    if staging.exists() {
        bail!(
            "{} exists (an import that was killed?): remove it first",
            staging.display()
        );
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = import(&staging, input).and_then(|manifest| {
        if data_dir.exists() {
            // Empty (checked above) unless a service started on it meanwhile: then this
            // fails and nothing of that service's is touched.
            std::fs::remove_dir(data_dir).with_context(|| {
                format!(
                    "{} is no longer empty: nothing restored",
                    data_dir.display()
                )
            })?;
        }
        std::fs::rename(&staging, data_dir)
            .with_context(|| format!("moving {} to {}", staging.display(), data_dir.display()))?;
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .with_context(|| format!("syncing {}", parent.display()))?;
        }
        Ok(manifest)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// A relative path of plain components (no `..`, no root).
fn safe_relative(path: &Path) -> anyhow::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            _ => bail!("unsafe path in the archive: {}", path.display()),
        }
    }
    if clean.as_os_str().is_empty() {
        bail!("empty path in the archive");
    }
    Ok(clean)
}

fn import(data_dir: &Path, input: impl Read) -> anyhow::Result<Manifest> {
    let mut archive = tar::Archive::new(input);
    let mut seen = Manifest::default();
    let mut manifest: Option<Manifest> = None;
    let mut store: Option<EmbeddedStore> = None;
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.into_owned();
        let relative = path
            .strip_prefix(ROOT)
            .with_context(|| {
                format!(
                    "{} is outside {ROOT}/: not a pinhive backup",
                    path.display()
                )
            })?
            .to_path_buf();
        if manifest.is_some() {
            bail!(
                "{} follows the manifest: not a pinhive backup",
                path.display()
            );
        }
        if relative == Path::new("manifest.json") {
            manifest = Some(serde_json::from_reader(entry).context("reading the manifest")?);
            continue;
        }
        if let Ok(file) = relative.strip_prefix("files") {
            let file = safe_relative(file)?;
            if file.starts_with("store") {
                bail!("{}: the store comes as keyspaces", path.display());
            }
            let target = data_dir.join(&file);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut reader = Hashing::new(entry);
            let mut out =
                File::create(&target).with_context(|| format!("creating {}", target.display()))?;
            io::copy(&mut reader, &mut out)?;
            out.sync_all()?;
            let (bytes, sha256) = reader.finish();
            seen.files.push(Piece {
                name: file.to_string_lossy().into_owned(),
                bytes,
                entries: None,
                sha256,
            });
        } else if let Ok(member) = relative.strip_prefix("store") {
            let name = member
                .to_str()
                .and_then(|m| m.strip_suffix(".kv"))
                .filter(|n| {
                    !n.is_empty()
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '#'))
                })
                .with_context(|| format!("{}: not a keyspace member", path.display()))?
                .to_string();
            if store.is_none() {
                store = Some(open_store(data_dir)?);
            }
            let store = store.as_ref().context("the store")?;
            let mut parser = EntryParser {
                reader: Hashing::new(entry),
            };
            let entries = store
                .restore_keyspace(&name, &mut parser)
                .with_context(|| format!("restoring keyspace {name}"))?;
            let (bytes, sha256) = parser.reader.finish();
            seen.keyspaces.push(Piece {
                name,
                bytes,
                entries: Some(entries),
                sha256,
            });
        } else {
            bail!("{}: unknown member of a pinhive backup", path.display());
        }
    }
    let Some(manifest) = manifest else {
        bail!("the archive ends before its manifest: cut short, or not a pinhive backup");
    };
    if manifest.format != FORMAT {
        bail!(
            "a backup of format {:?}; this release reads {FORMAT:?}",
            manifest.format
        );
    }
    if seen.files != manifest.files {
        bail!("the log files differ from the manifest: the backup is damaged");
    }
    if seen.keyspaces != manifest.keyspaces {
        bail!("the store's keyspaces differ from the manifest: the backup is damaged");
    }
    let store = match store {
        Some(store) => store,
        None => bail!("the backup holds no store"),
    };
    store.sync()?;
    // Read the restored store back: each keyspace must hash to what was exported.
    let snapshot = store.backup_snapshot();
    for piece in &manifest.keyspaces {
        let mut reader = Hashing::new(EntryReader {
            entries: snapshot.entries(&piece.name)?,
            buffer: Vec::new(),
            at: 0,
        });
        io::copy(&mut reader, &mut io::sink())?;
        let (bytes, sha256) = reader.finish();
        if bytes != piece.bytes || sha256 != piece.sha256 {
            bail!(
                "keyspace {} reads back differently from the backup",
                piece.name
            );
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_restores_into_a_new_data_dir_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir_all(source.join("log/partition-0000")).unwrap();
        std::fs::write(source.join("log/partition-0000/0.seg"), b"events").unwrap();
        std::fs::write(source.join("log/LOCK"), b"").unwrap();
        {
            let store = open_store(&source).unwrap();
            let mut written = 0;
            let entries = (0..300u32).map(|i| Ok((i.to_be_bytes().to_vec(), vec![7; 50])));
            written += store.restore_keyspace("pins", entries).unwrap();
            assert_eq!(written, 300);
            store.sync().unwrap();
        }
        let mut backup = Vec::new();
        let exported = export(&source, &mut backup).unwrap();
        let pins = exported
            .keyspaces
            .iter()
            .find(|k| k.name == "pins")
            .unwrap();
        assert_eq!(pins.entries, Some(300));
        assert_eq!(exported.files.len(), 1, "{:?}", exported.files);

        let target = dir.path().join("target");
        let imported = import_into_new(&target, backup.as_slice()).unwrap();
        assert_eq!(imported, exported);
        assert_eq!(
            std::fs::read(target.join("log/partition-0000/0.seg")).unwrap(),
            b"events"
        );
        let mut again = Vec::new();
        let re_exported = export(&target, &mut again).unwrap();
        assert_eq!(re_exported.keyspaces, exported.keyspaces);
        assert_eq!(re_exported.files, exported.files);

        // Not into a data dir in use.
        let error = import_into_new(&target, backup.as_slice()).unwrap_err();
        assert!(error.to_string().contains("not empty"), "{error}");
        // A flipped byte in the log file's member is found, and nothing is left behind.
        let at = backup.windows(6).position(|w| w == b"events").unwrap();
        let mut damaged = backup.clone();
        damaged[at] = b'E';
        let other = dir.path().join("other");
        let error = import_into_new(&other, damaged.as_slice()).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("other"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        // Cut short: no manifest.
        let error = import_into_new(&other, &backup[..backup.len() / 2]).unwrap_err();
        assert!(
            format!("{error:#}").contains("manifest") || format!("{error:#}").contains("cut"),
            "{error:#}"
        );
    }
}

//! Dead properties (PROPPATCH), stored durably beside the resources they belong to.
//!
//! The properties of `dir/name` (a file or a collection) live in the hidden file
//! `dir/.cloudmount-props-name`; those of the root in `.cloudmount-props-` inside it. Such names
//! are never served or listed (see `fs`). The file holds every property of the resource
//! (namespace, prefix, name and raw XML value, length-prefixed), rewritten whole through a temp
//! file and a rename, so a crash leaves the old or the new set, never a mix; read-modify-write
//! cycles are serialized by one lock.
//!
//! The properties follow their resource: MOVE renames the property file along, COPY copies it,
//! DELETE removes it (a destination overwritten by MOVE or COPY takes the source's properties,
//! or none). A collection's members keep theirs through a MOVE of the collection (their
//! property files are inside it); COPY of a collection copies its members' properties and the
//! collection's own.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dav_server::fs::DavProp;

/// Name prefix of property files.
pub(crate) const PROPS_PREFIX: &str = ".cloudmount-props-";

/// Serializes read-modify-write cycles of property files.
static PATCH_LOCK: Mutex<()> = Mutex::new(());

/// The property file of the resource at `rel` (relative to `root`; empty for the root).
pub(crate) fn props_file(root: &Path, rel: &Path) -> Option<PathBuf> {
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => {
            let mut file = std::ffi::OsString::from(PROPS_PREFIX);
            file.push(name);
            Some(root.join(parent).join(file))
        }
        _ if rel.as_os_str().is_empty() => Some(root.join(PROPS_PREFIX)),
        _ => None,
    }
}

/// Every property stored in `file` (none when it does not exist).
pub(crate) fn load(file: &Path) -> io::Result<Vec<DavProp>> {
    let mut data = Vec::new();
    match std::fs::File::open(file) {
        Ok(mut f) => f.read_to_end(&mut data)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    decode(&data).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a property file", file.display()),
        )
    })
}

/// Applies `patch` (true: set, false: remove), in order, to the properties in `file`.
/// `create_temp` makes the temp file written and renamed over it.
pub(crate) fn patch(
    file: &Path,
    patch: &[(bool, DavProp)],
    create_temp: impl FnOnce(&Path) -> io::Result<(PathBuf, std::fs::File)>,
) -> io::Result<()> {
    let _guard = PATCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut props = load(file)?;
    for (set, p) in patch {
        props.retain(|q| !(q.name == p.name && q.namespace == p.namespace));
        if *set {
            props.push(p.clone());
        }
    }
    if props.is_empty() {
        return remove(file);
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let (tmp, mut f) = create_temp(dir)?;
    let written = io::Write::write_all(&mut f, &encode(&props)).and_then(|()| f.sync_data());
    drop(f);
    match written.and_then(|()| std::fs::rename(&tmp, file)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes a property file (gone already is fine).
pub(crate) fn remove(file: &Path) -> io::Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// After a MOVE (`copy` false) or COPY of a resource from `src` to `dst` (property files):
/// the destination takes the source's properties, or none.
pub(crate) fn follow(src: &Path, dst: &Path, copy: bool) -> io::Result<()> {
    let _guard = PATCH_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let has = std::fs::symlink_metadata(src).is_ok_and(|m| m.is_file());
    match (has, copy) {
        (false, _) => remove(dst),
        (true, false) => std::fs::rename(src, dst),
        (true, true) => std::fs::copy(src, dst).map(|_| ()),
    }
}

/// Removes the property files directly in `dir` (of members already deleted), so that the
/// directory itself can be removed. Returns how many were removed.
pub(crate) fn remove_all_in(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(PROPS_PREFIX.as_bytes())
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn put_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

fn encode(props: &[DavProp]) -> Vec<u8> {
    let mut out = b"cmprops1".to_vec();
    for p in props {
        put_field(&mut out, Some(p.name.as_bytes()));
        put_field(&mut out, p.prefix.as_deref().map(str::as_bytes));
        put_field(&mut out, p.namespace.as_deref().map(str::as_bytes));
        put_field(&mut out, p.xml.as_deref());
    }
    out
}

fn take_field(data: &mut &[u8]) -> Option<Option<Vec<u8>>> {
    let (&tag, rest) = data.split_first()?;
    *data = rest;
    match tag {
        0 => Some(None),
        1 => {
            let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
            let bytes = data.get(4..4 + len)?.to_vec();
            *data = &data[4 + len..];
            Some(Some(bytes))
        }
        _ => None,
    }
}

fn decode(data: &[u8]) -> Option<Vec<DavProp>> {
    let mut rest = data.strip_prefix(b"cmprops1")?;
    let mut props = Vec::new();
    while !rest.is_empty() {
        let name = String::from_utf8(take_field(&mut rest)??).ok()?;
        let text = |f: Option<Vec<u8>>| f.map(String::from_utf8).transpose().ok();
        let prefix = text(take_field(&mut rest)?)?;
        let namespace = text(take_field(&mut rest)?)?;
        let xml = take_field(&mut rest)?;
        props.push(DavProp {
            name,
            prefix,
            namespace,
            xml,
        });
    }
    Some(props)
}

/// The source and destination of a COPY, as paths relative to the served directory, when both
/// are plain paths below it (`None` otherwise: dav-server answers such a request itself).
pub(crate) fn copy_target(
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Option<(PathBuf, PathBuf)> {
    let dest = headers.get("destination")?.to_str().ok()?;
    let dest_path = match dest.parse::<http::Uri>() {
        Ok(u) => u.path().to_string(),
        Err(_) => return None,
    };
    Some((rel_path(uri.path())?, rel_path(&dest_path)?))
}

/// A request path as a relative path below the served directory: decoded, without `.`, `..` or
/// empty segments (refused), without its trailing slash.
fn rel_path(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let name = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .ok()?;
        if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return None;
        }
        out.push(name.as_ref());
    }
    Some(out)
}

/// After a COPY of `from` to `to` (relative paths) succeeded: when `from` is a collection (a
/// real directory, not a symlink), its own properties are copied to `to`'s.
pub(crate) fn copy_collection_props(root: &Path, from: &Path, to: &Path) -> io::Result<()> {
    let is_dir = std::fs::symlink_metadata(root.join(from)).is_ok_and(|m| m.is_dir())
        && std::fs::symlink_metadata(root.join(to)).is_ok_and(|m| m.is_dir());
    if !is_dir || from.as_os_str().is_empty() {
        return Ok(());
    }
    // Never through a symlinked parent: the directories were made by our filesystem, which
    // refuses symlinks; check the parents anyway before writing.
    for p in [from, to] {
        let mut at = root.to_path_buf();
        for c in p.parent().into_iter().flat_map(|p| p.components()) {
            at.push(c);
            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Ok(());
            }
        }
    }
    match (props_file(root, from), props_file(root, to)) {
        (Some(src), Some(dst)) => follow(&src, &dst, true),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(ns: Option<&str>, name: &str, xml: Option<&str>) -> DavProp {
        DavProp {
            name: name.into(),
            prefix: ns.map(|_| "Z".into()),
            namespace: ns.map(Into::into),
            xml: xml.map(|x| x.as_bytes().to_vec()),
        }
    }

    type Key = (String, Option<String>, Option<String>, Option<Vec<u8>>);

    fn keys(props: &[DavProp]) -> Vec<Key> {
        props
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.prefix.clone(),
                    p.namespace.clone(),
                    p.xml.clone(),
                )
            })
            .collect()
    }

    fn temp(dir: &Path) -> io::Result<(PathBuf, std::fs::File)> {
        let p = dir.join(".cloudmount-put-test.tmp");
        Ok((p.clone(), std::fs::File::create(p)?))
    }

    #[test]
    fn files_beside_their_resources() {
        let root = Path::new("/srv");
        assert_eq!(
            props_file(root, Path::new("a/b.txt")).unwrap(),
            Path::new("/srv/a/.cloudmount-props-b.txt")
        );
        assert_eq!(
            props_file(root, Path::new("top")).unwrap(),
            Path::new("/srv/.cloudmount-props-top")
        );
        assert_eq!(
            props_file(root, Path::new("")).unwrap(),
            Path::new("/srv/.cloudmount-props-")
        );
    }

    #[test]
    fn set_replace_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".cloudmount-props-f");
        assert!(load(&file).unwrap().is_empty());
        let a = prop(Some("urn:a"), "p", Some("<Z:p xmlns:Z=\"urn:a\">ü</Z:p>"));
        let b = prop(None, "q", None);
        let a2 = prop(Some("urn:a"), "p", Some("<Z:p xmlns:Z=\"urn:a\">2</Z:p>"));
        patch(&file, &[(true, a.clone()), (true, b.clone())], temp).unwrap();
        assert_eq!(keys(&load(&file).unwrap()), keys(&[a.clone(), b.clone()]));
        // Set then remove in one patch, and a replace.
        let c = prop(Some("urn:c"), "c", Some("x"));
        patch(
            &file,
            &[(true, c.clone()), (false, c), (true, a2.clone())],
            temp,
        )
        .unwrap();
        assert_eq!(keys(&load(&file).unwrap()), keys(&[b.clone(), a2.clone()]));
        patch(&file, &[(false, a2), (false, b)], temp).unwrap();
        assert!(!file.exists(), "no properties: no file");
        std::fs::write(&file, b"garbage").unwrap();
        assert!(load(&file).is_err());
    }

    #[test]
    fn properties_follow_moves_and_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("pa"),
            dir.path().join("pb"),
            dir.path().join("pc"),
        );
        patch(&a, &[(true, prop(None, "x", Some("1")))], temp).unwrap();
        patch(&c, &[(true, prop(None, "y", Some("2")))], temp).unwrap();
        follow(&a, &b, true).unwrap();
        assert_eq!(keys(&load(&b).unwrap()), keys(&load(&a).unwrap()));
        follow(&a, &c, false).unwrap();
        assert!(!a.exists());
        assert_eq!(keys(&load(&c).unwrap()), keys(&load(&b).unwrap()));
        follow(&a, &b, false).unwrap();
        assert!(
            !b.exists(),
            "a source without properties clears the destination's"
        );
        assert_eq!(remove_all_in(dir.path()).unwrap(), 0);
        std::fs::rename(&c, dir.path().join(".cloudmount-props-c")).unwrap();
        assert_eq!(remove_all_in(dir.path()).unwrap(), 1);
    }
}

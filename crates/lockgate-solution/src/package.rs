//! A solution package as the zip holds it: named entries in order. Reading rejects corrupt archives and
//! path traversal; writing regenerates `[Content_Types].xml`, uses Microsoft's entry order and goes
//! through a temporary file so that nothing half-written is left behind.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use crate::SolutionError;

/// Largest total uncompressed size accepted from one zip (guards against zip bombs).
const MAX_UNCOMPRESSED_BYTES: u64 = 2 << 30;
/// Most entries accepted from one zip.
const MAX_ENTRIES: usize = 200_000;

pub const SOLUTION_XML: &str = "solution.xml";
pub const CUSTOMIZATIONS_XML: &str = "customizations.xml";
pub const CONTENT_TYPES_XML: &str = "[Content_Types].xml";

/// The entries of a solution zip, in order, without directories.
#[derive(Debug, Clone, PartialEq)]
pub struct SolutionPackage {
    pub entries: Vec<(String, Vec<u8>)>,
    /// Where it came from, for error messages (a zip path or a folder).
    pub origin: String,
}

impl SolutionPackage {
    /// Reads a solution zip from disk.
    pub fn read_zip(path: &Path) -> Result<Self, SolutionError> {
        let bytes = std::fs::read(path).map_err(|err| SolutionError::io(path, err))?;
        Self::from_zip_bytes(&bytes, path)
    }

    /// Reads a solution zip from memory; `path` names it in errors.
    pub fn from_zip_bytes(bytes: &[u8], path: &Path) -> Result<Self, SolutionError> {
        let corrupt = |message: String| SolutionError::CorruptZip {
            path: path.to_path_buf(),
            message,
        };
        let mut archive =
            zip::ZipArchive::new(Cursor::new(bytes)).map_err(|err| corrupt(err.to_string()))?;
        if archive.len() > MAX_ENTRIES {
            return Err(corrupt(format!(
                "{} entries is more than the {MAX_ENTRIES} accepted",
                archive.len()
            )));
        }
        let mut entries = Vec::with_capacity(archive.len());
        let mut total: u64 = 0;
        for index in 0..archive.len() {
            let mut file = archive
                .by_index(index)
                .map_err(|err| corrupt(err.to_string()))?;
            let name = file
                .name()
                .map_err(|err| corrupt(err.to_string()))?
                .into_owned();
            if file.is_dir() {
                continue;
            }
            let name = name.replace('\\', "/");
            if !is_safe_relative_path(&name) || file.enclosed_name().is_none() {
                return Err(SolutionError::PathTraversal {
                    path: path.to_path_buf(),
                    entry: name,
                });
            }
            total = total.saturating_add(file.size());
            if total > MAX_UNCOMPRESSED_BYTES {
                return Err(corrupt("uncompressed size exceeds 2 GiB".into()));
            }
            let mut data =
                Vec::with_capacity(usize::try_from(file.size().min(1 << 24)).unwrap_or(0));
            (&mut file)
                .take(MAX_UNCOMPRESSED_BYTES)
                .read_to_end(&mut data)
                .map_err(|err| corrupt(format!("entry `{name}`: {err}")))?;
            entries.push((name, data));
        }
        Ok(SolutionPackage {
            entries,
            origin: path.display().to_string(),
        })
    }

    /// Looks an entry up by name, ignoring ASCII case (Microsoft's tools do).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(entry, _)| entry.eq_ignore_ascii_case(name))
            .map(|(_, data)| data.as_slice())
    }

    /// The bytes of a required root entry, or an error naming the package.
    pub fn required(&self, name: &str) -> Result<&[u8], SolutionError> {
        self.get(name).ok_or_else(|| SolutionError::Missing {
            path: PathBuf::from(&self.origin),
            what: format!("`{name}` (not a solution package)"),
        })
    }

    /// Builds the zip in memory: `customizations.xml`, `[Content_Types].xml`, `solution.xml`, then
    /// the other entries in their order; deflated; a fixed timestamp so equal input gives equal bytes.
    pub fn to_zip_bytes(&self) -> Result<Vec<u8>, SolutionError> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default());
        let zip_err =
            |err: zip::result::ZipError| SolutionError::Invalid(format!("writing zip: {err}"));
        let names: Vec<&str> = self.entries.iter().map(|(name, _)| name.as_str()).collect();
        let content_types = content_types_xml(&names);
        let mut ordered: Vec<(&str, &[u8])> = Vec::with_capacity(self.entries.len() + 1);
        for root in [CUSTOMIZATIONS_XML, CONTENT_TYPES_XML, SOLUTION_XML] {
            if root == CONTENT_TYPES_XML {
                ordered.push((CONTENT_TYPES_XML, content_types.as_slice()));
            } else if let Some(data) = self.get(root) {
                ordered.push((root, data));
            }
        }
        for (name, data) in &self.entries {
            let is_root = [CUSTOMIZATIONS_XML, CONTENT_TYPES_XML, SOLUTION_XML]
                .iter()
                .any(|root| name.eq_ignore_ascii_case(root));
            if !is_root {
                ordered.push((name, data));
            }
        }
        for (name, data) in ordered {
            writer.start_file(name, options).map_err(zip_err)?;
            writer
                .write_all(data)
                .map_err(|err| SolutionError::Invalid(format!("writing zip: {err}")))?;
        }
        Ok(writer.finish().map_err(zip_err)?.into_inner())
    }

    /// Writes the zip to `path` through a temporary file in the same folder.
    pub fn write_zip(&self, path: &Path) -> Result<(), SolutionError> {
        write_file_atomically(path, &self.to_zip_bytes()?)
    }
}

/// `[Content_Types].xml` for a list of entry names: one `Default` per extension (xml first), one
/// `Override` per extension-less part, with the UTF-8 BOM Microsoft's exports carry.
pub fn content_types_xml(names: &[&str]) -> Vec<u8> {
    let mut extensions: Vec<String> = vec!["xml".to_string()];
    let mut overrides: Vec<String> = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case(CONTENT_TYPES_XML) {
            continue;
        }
        let file_name = name.rsplit('/').next().unwrap_or(name);
        match file_name.rsplit_once('.') {
            Some((_, extension)) if !extension.is_empty() => {
                if !extensions
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(extension))
                {
                    extensions.push(extension.to_string());
                }
            }
            _ => overrides.push(format!("/{name}")),
        }
    }
    let mut out = String::from("\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    out.push_str("<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">");
    for extension in extensions {
        out.push_str(&format!(
            "<Default Extension=\"{}\" ContentType=\"application/octet-stream\" />",
            escape(&extension)
        ));
    }
    for part in overrides {
        out.push_str(&format!(
            "<Override PartName=\"{}\" ContentType=\"application/octet-stream\" />",
            escape(&part)
        ));
    }
    out.push_str("</Types>");
    out.into_bytes()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

/// True for a relative path of normal segments: no absolute paths, drive letters, `.`/`..`, empty
/// segments or NUL bytes. Used for zip entries and for paths derived from XML content.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && !path.contains('\\')
        && !path.starts_with('/')
        && !path.contains(':')
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Writes a file through `<name>.tmp-<pid>` beside it and a rename.
pub fn write_file_atomically(path: &Path, data: &[u8]) -> Result<(), SolutionError> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|err| SolutionError::io(parent, err))?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = std::fs::File::create(&temp)
        .and_then(|mut file| file.write_all(data).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(err) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(SolutionError::io(path, err));
    }
    Ok(())
}

/// Loads a solution from a zip, an unpacked source folder (`Other/Solution.xml`, packed as it is) or a
/// folder holding a zip's raw contents (`solution.xml` at the top).
pub fn load_solution_input(path: &Path) -> Result<SolutionPackage, SolutionError> {
    if path.is_dir() {
        if path.join("solution.xml").is_file() && !path.join("Other").is_dir() {
            let tree = crate::SourceTree::read_dir(path)?;
            let entries = tree.files.into_iter().collect();
            return Ok(SolutionPackage {
                entries,
                origin: path.display().to_string(),
            });
        }
        let tree = crate::SourceTree::read_dir(path)?;
        return crate::pack(&tree, None);
    }
    if !path.exists() {
        return Err(SolutionError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    SolutionPackage::read_zip(path)
}

/// Differences between two packages compared as Microsoft's tools would see them: the same entry
/// names, XML equal after normalising layout (and ignoring the order of rows in customizations.xml
/// sections and of `[Content_Types].xml` items), JSON equal as values, other entries byte for byte.
pub fn normalized_differences(left: &SolutionPackage, right: &SolutionPackage) -> Vec<String> {
    let mut differences = Vec::new();
    let (left_entries, right_entries) = (entry_map(left), entry_map(right));
    for name in left_entries
        .keys()
        .filter(|name| !right_entries.contains_key(*name))
    {
        if name.as_str() != CONTENT_TYPES_XML.to_ascii_lowercase() {
            differences.push(format!("only in {}: {name}", left.origin));
        }
    }
    for name in right_entries
        .keys()
        .filter(|name| !left_entries.contains_key(*name))
    {
        if name.as_str() != CONTENT_TYPES_XML.to_ascii_lowercase() {
            differences.push(format!("only in {}: {name}", right.origin));
        }
    }
    for (name, left_data) in &left_entries {
        let Some(right_data) = right_entries.get(name) else {
            continue;
        };
        if !entries_equivalent(name, left_data, right_data) {
            differences.push(format!("differs: {name}"));
        }
    }
    differences
}

fn entry_map(package: &SolutionPackage) -> std::collections::BTreeMap<String, &[u8]> {
    package
        .entries
        .iter()
        .map(|(name, data)| (name.to_ascii_lowercase(), data.as_slice()))
        .collect()
}

/// True when two versions of one entry carry the same content (see [`normalized_differences`]).
pub fn entries_equivalent(name: &str, left: &[u8], right: &[u8]) -> bool {
    if left == right {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    let strip = |data: &[u8]| data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data).to_vec();
    if lower.ends_with(".json") {
        let parse = |data: &[u8]| serde_json::from_slice::<serde_json::Value>(&strip(data)).ok();
        if let (Some(a), Some(b)) = (parse(left), parse(right)) {
            return a == b;
        }
        return strip(left) == strip(right);
    }
    if lower.ends_with(".xml") {
        // Rows of a customizations section, and forms and views of a table, are packed in file order.
        let unordered = if lower.ends_with(CUSTOMIZATIONS_XML) {
            crate::xml::Unordered {
                depth: Some(1),
                names: crate::layout::UNORDERED_TABLE_PARTS,
            }
        } else if lower == CONTENT_TYPES_XML.to_ascii_lowercase() {
            crate::xml::Unordered {
                depth: Some(0),
                names: &[],
            }
        } else {
            crate::xml::Unordered::default()
        };
        if let (Ok(a), Ok(b)) = (
            crate::xml::parse(left, name),
            crate::xml::parse(right, name),
        ) {
            return crate::xml::canonical(&a.root, unordered)
                == crate::xml::canonical(&b.root, unordered);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_has_a_default_per_extension_and_overrides_for_bare_parts() {
        let xml = String::from_utf8(content_types_xml(&[
            "customizations.xml",
            "Workflows/a.json",
            "CanvasApps/x_BackgroundImageUri",
            "b.JSON",
        ]))
        .unwrap();
        assert!(xml.starts_with('\u{feff}'));
        assert!(xml.contains("<Default Extension=\"xml\""));
        assert_eq!(xml.matches("Extension=\"json\"").count(), 1);
        assert!(!xml.contains("JSON"));
        assert!(xml.contains("<Override PartName=\"/CanvasApps/x_BackgroundImageUri\""));
    }

    #[test]
    fn unsafe_paths_are_recognised() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "C:/x",
            "a//b",
            "a\\..\\b",
            "",
        ] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
        assert!(is_safe_relative_path("Workflows/a-b.json"));
    }
}

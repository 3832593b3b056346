//! SolutionPackager mapping files (`/map`, `--map`): `<Folder>`, `<FileToFile>` and `<FileToPath>`
//! directives that make pack take files from elsewhere (typically build output) instead of the tree.
//! Earlier directives win; relative targets resolve from the unpacked folder; `%VAR%` expands.

use std::path::{Path, PathBuf};

use crate::SolutionError;
use crate::layout::SourceTree;
use crate::package::is_safe_relative_path;
use crate::xml::{self, Element};

/// One directive.
#[derive(Debug, Clone, PartialEq)]
pub enum Directive {
    /// Every file under tree folder `map` comes from disk folder `to`.
    Folder { map: String, to: String },
    /// The tree file matching `map` (`**` matches any folders) comes from disk file `to`.
    FileToFile { map: String, to: String },
    /// Any tree file whose name matches `map` (`*` wildcards) comes from `to/<name>`.
    FileToPath { map: String, to: String },
}

/// A parsed mapping file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    pub directives: Vec<Directive>,
    /// The mapping file, for error messages.
    pub origin: String,
}

fn normalize(path: &str) -> String {
    path.replace('\\', "/").trim_matches('/').to_string()
}

/// Expands `%NAME%` from the environment; an unknown name is an error.
fn expand(text: &str, origin: &str) -> Result<String, SolutionError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| {
            SolutionError::Invalid(format!(
                "{origin}: environment variable `{name}` used in `{text}` is not set"
            ))
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Mapping {
    pub fn read(path: &Path) -> Result<Self, SolutionError> {
        let bytes = std::fs::read(path).map_err(|err| SolutionError::io(path, err))?;
        Self::parse(&bytes, &path.display().to_string())
    }

    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, SolutionError> {
        let doc = xml::parse(bytes, origin)?;
        if doc.root.name != "Mapping" {
            return Err(SolutionError::InvalidXml {
                path: origin.into(),
                message: format!("expected <Mapping>, found <{}>", doc.root.name),
            });
        }
        let mut directives = Vec::new();
        for element in doc.root.elements() {
            let attribute = |name: &str| -> Result<String, SolutionError> {
                element
                    .attribute(name)
                    .map(str::to_string)
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| SolutionError::InvalidXml {
                        path: origin.into(),
                        message: format!("<{}> needs a `{name}` attribute", element.name),
                    })
            };
            let (map, to) = (
                normalize(&attribute("map")?),
                expand(&attribute("to")?, origin)?.replace('\\', "/"),
            );
            directives.push(match element.name.as_str() {
                "Folder" => Directive::Folder { map, to },
                "FileToFile" => Directive::FileToFile { map, to },
                "FileToPath" => Directive::FileToPath { map, to },
                other => {
                    return Err(SolutionError::InvalidXml {
                        path: origin.into(),
                        message: format!("unknown directive <{other}> (expected Folder, FileToFile or FileToPath)"),
                    });
                }
            });
        }
        Ok(Mapping {
            directives,
            origin: origin.into(),
        })
    }

    /// Where the first matching directive takes `tree_path` from, relative to `base` unless absolute.
    pub fn source_for(&self, tree_path: &str, base: &Path) -> Option<PathBuf> {
        let file_name = tree_path.rsplit('/').next().unwrap_or(tree_path);
        let resolve = |to: &str| {
            let to = Path::new(to);
            if to.is_absolute() {
                to.to_path_buf()
            } else {
                base.join(to)
            }
        };
        self.directives
            .iter()
            .find_map(|directive| match directive {
                Directive::Folder { map, to } => {
                    let rest = tree_path.strip_prefix(map.as_str())?.strip_prefix('/')?;
                    Some(resolve(to).join(rest))
                }
                Directive::FileToFile { map, to } => {
                    path_matches(map, tree_path).then(|| resolve(to))
                }
                Directive::FileToPath { map, to } => {
                    name_matches(map, file_name).then(|| resolve(to).join(file_name))
                }
            })
    }
}

/// `**` matches any number of folders; other segments match by name (`*` wildcards allowed).
fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    segments_match(&pattern, &path)
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            segments_match(&pattern[1..], path)
                || (!path.is_empty() && segments_match(pattern, &path[1..]))
        }
        (Some(segment), Some(name)) => {
            name_matches(segment, name) && segments_match(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Case-insensitive file-name match with `*` wildcards (`*.dll`, `*.*`, `Contoso*.js`).
fn name_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut middle = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match middle.find(part) {
            Some(at) => middle = &middle[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The payload paths a row file refers to (plug-in DLLs, web-resource contents, flows, canvas apps).
fn referenced_payloads(row: &Element) -> Vec<String> {
    let mut paths: Vec<String> = [
        "FileName",
        "JsonFileName",
        "XamlFileName",
        "DocumentUri",
        "BackgroundImageUri",
    ]
    .iter()
    .filter_map(|name| row.child_text(name))
    .map(|text| normalize(&text))
    .collect();
    if row.name == "WebResource"
        && let Some(name) = row.child_text("Name")
    {
        paths.push(format!("WebResources/{name}"));
    }
    paths.retain(|path| is_safe_relative_path(path));
    paths
}

/// Applies a mapping to a tree read from `base`: mapped files present in the tree are replaced by
/// their mapped source, and payloads that rows refer to but the tree lacks are read from their mapped
/// source. A mapped source that does not exist is an error naming both paths.
pub fn apply(
    tree: &mut SourceTree,
    mapping: &Mapping,
    base: &Path,
) -> Result<usize, SolutionError> {
    let mut wanted: Vec<String> = tree.files.keys().cloned().collect();
    for (path, data) in &tree.files {
        if crate::layout::is_row_file(path)
            && let Ok(doc) = xml::parse(data, path)
        {
            wanted.extend(referenced_payloads(&doc.root));
        }
    }
    wanted.sort();
    wanted.dedup();
    let mut applied = 0;
    for path in wanted {
        let Some(source) = mapping.source_for(&path, base) else {
            continue;
        };
        // A web resource's tree name and its zip name may both be wanted; only one needs to exist.
        let data = match std::fs::read(&source) {
            Ok(data) => data,
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound
                    && path.starts_with("WebResources/")
                    && !tree.files.contains_key(&path) =>
            {
                continue;
            }
            Err(err) => {
                return Err(SolutionError::Invalid(format!(
                    "{}: `{path}` is mapped to {}, which cannot be read: {err}",
                    mapping.origin,
                    source.display()
                )));
            }
        };
        tree.files.insert(path, data);
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_solution_packager() {
        assert!(name_matches("*.dll", "Contoso.Plugins.DLL"));
        assert!(name_matches("*.*", "a.js"));
        assert!(name_matches("contoso*.js", "Contoso_main.js"));
        assert!(!name_matches("*.dll", "a.dll.data.xml"));
        assert!(path_matches(
            "PluginAssemblies/**/Contoso.dll",
            "PluginAssemblies/Contoso-1234/Contoso.dll"
        ));
        assert!(path_matches("**/x.js", "WebResources/a/b/x.js"));
        assert!(!path_matches(
            "PluginAssemblies/**/Contoso.dll",
            "WebResources/Contoso.dll"
        ));
    }

    #[test]
    fn earlier_directives_win_and_bad_files_are_errors() {
        let mapping = Mapping::parse(
            br#"<Mapping><FileToFile map="WebResources\app.js" to="dist\app.min.js" /><FileToPath map="*.js" to="dist" /><Folder map="Images" to="assets/img" /></Mapping>"#,
            "map.xml",
        )
        .unwrap();
        let base = Path::new("/src");
        assert_eq!(
            mapping.source_for("WebResources/app.js", base),
            Some(PathBuf::from("/src/dist/app.min.js"))
        );
        assert_eq!(
            mapping.source_for("WebResources/other.js", base),
            Some(PathBuf::from("/src/dist/other.js"))
        );
        assert_eq!(
            mapping.source_for("Images/a/b.png", base),
            Some(PathBuf::from("/src/assets/img/a/b.png"))
        );
        assert_eq!(mapping.source_for("Other/Solution.xml", base), None);
        let err = Mapping::parse(b"<Mapping><Copy map=\"a\" to=\"b\" /></Mapping>", "map.xml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("map.xml") && err.contains("<Copy>"), "{err}");
        let err = Mapping::parse(
            b"<Mapping><Folder map=\"a\" to=\"%LOCKGATE_NO_SUCH_VARIABLE%\" /></Mapping>",
            "map.xml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("LOCKGATE_NO_SUCH_VARIABLE"), "{err}");
    }
}

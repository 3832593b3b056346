//! Solution version numbers (`major.minor.build.revision`): parsing, bumping, and rewriting the
//! `<Version>` of `Other/Solution.xml` in place without touching the rest of the file.

use std::fmt;
use std::path::Path;

use crate::SolutionError;
use crate::layout::TREE_SOLUTION_XML;

/// A four-part solution version; older exports with two or three parts read with zeros appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SolutionVersion(pub [u32; 4]);

impl std::str::FromStr for SolutionVersion {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(format!(
                "`{text}` is not a solution version (expected major.minor.build.revision)"
            ));
        }
        let mut numbers = [0u32; 4];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            *slot = part.parse().map_err(|_| {
                format!("`{text}` is not a solution version: `{part}` is not a number")
            })?;
        }
        Ok(SolutionVersion(numbers))
    }
}

impl fmt::Display for SolutionVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [major, minor, build, revision] = self.0;
        write!(f, "{major}.{minor}.{build}.{revision}")
    }
}

/// Which part `--bump` increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionPart {
    Build,
    Revision,
}

impl std::str::FromStr for VersionPart {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "build" => Ok(VersionPart::Build),
            "revision" => Ok(VersionPart::Revision),
            _ => Err(format!("cannot bump `{text}` (expected build or revision)")),
        }
    }
}

impl SolutionVersion {
    /// Increments the build (resetting the revision to 0) or the revision.
    pub fn bumped(self, part: VersionPart) -> Result<Self, String> {
        let [major, minor, build, revision] = self.0;
        let next = match part {
            VersionPart::Build => [
                major,
                minor,
                build.checked_add(1).ok_or("build number overflows")?,
                0,
            ],
            VersionPart::Revision => [
                major,
                minor,
                build,
                revision.checked_add(1).ok_or("revision number overflows")?,
            ],
        };
        Ok(SolutionVersion(next))
    }
}

/// Finds the byte range of the manifest's `<Version>` text: the first `<Version>` after `<SolutionManifest>`.
fn version_span(text: &str) -> Option<(usize, usize)> {
    let manifest = text.find("<SolutionManifest")?;
    let open = manifest + text[manifest..].find("<Version>")? + "<Version>".len();
    let close = open + text[open..].find("</Version>")?;
    Some((open, close))
}

/// Reads the version of an unpacked solution.
pub fn read_tree_version(dir: &Path) -> Result<SolutionVersion, SolutionError> {
    let path = dir.join(TREE_SOLUTION_XML);
    let text = std::fs::read_to_string(&path).map_err(|err| SolutionError::io(&path, err))?;
    let (open, close) = version_span(&text).ok_or_else(|| SolutionError::Missing {
        path: path.clone(),
        what: "<SolutionManifest>/<Version>".into(),
    })?;
    text[open..close]
        .parse()
        .map_err(|message: String| SolutionError::InvalidXml {
            path: path.display().to_string(),
            message,
        })
}

/// Writes a new version into `Other/Solution.xml` (atomically) and returns the old one.
pub fn set_tree_version(
    dir: &Path,
    version: SolutionVersion,
) -> Result<SolutionVersion, SolutionError> {
    let path = dir.join(TREE_SOLUTION_XML);
    let old = read_tree_version(dir)?;
    let text = std::fs::read_to_string(&path).map_err(|err| SolutionError::io(&path, err))?;
    let (open, close) = version_span(&text).ok_or_else(|| SolutionError::Missing {
        path: path.clone(),
        what: "<Version>".into(),
    })?;
    let updated = format!("{}{version}{}", &text[..open], &text[close..]);
    crate::package::write_file_atomically(&path, updated.as_bytes())?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_bump_and_print() {
        let version: SolutionVersion = "1.2.3.4".parse().unwrap();
        assert_eq!(
            version.bumped(VersionPart::Build).unwrap().to_string(),
            "1.2.4.0"
        );
        assert_eq!(
            version.bumped(VersionPart::Revision).unwrap().to_string(),
            "1.2.3.5"
        );
        assert_eq!(
            "1.1".parse::<SolutionVersion>().unwrap().to_string(),
            "1.1.0.0"
        );
        assert!(
            "1.x.0.0"
                .parse::<SolutionVersion>()
                .unwrap_err()
                .contains("`x`")
        );
        assert!("1".parse::<SolutionVersion>().is_err());
        assert!("1.2.3.4.5".parse::<SolutionVersion>().is_err());
        assert!(
            "1.2.3.4294967295"
                .parse::<SolutionVersion>()
                .unwrap()
                .bumped(VersionPart::Revision)
                .is_err()
        );
    }

    #[test]
    fn setting_the_version_changes_only_that_text() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Other")).unwrap();
        let original = "\u{feff}<?xml version=\"1.0\"?>\r\n<ImportExportXml version=\"9.2\">\r\n  <SolutionManifest>\r\n    <UniqueName>x</UniqueName>\r\n    <Version>1.0.0.1</Version>\r\n  </SolutionManifest>\r\n</ImportExportXml>";
        std::fs::write(dir.path().join("Other/Solution.xml"), original).unwrap();
        let old = set_tree_version(dir.path(), "2.0.0.0".parse().unwrap()).unwrap();
        assert_eq!(old.to_string(), "1.0.0.1");
        let now = std::fs::read_to_string(dir.path().join("Other/Solution.xml")).unwrap();
        assert_eq!(now, original.replace("1.0.0.1", "2.0.0.0"));
    }
}

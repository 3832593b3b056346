//! The SolutionPackager source layout: `unpack` splits a package into `Other/Solution.xml`,
//! `Other/Customizations.xml` and one file per component row beside its payload; `pack` merges it back.
//! Output is deterministic (sorted, re-indented XML, pretty JSON, LF) and folders are replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::SolutionError;
use crate::package::{
    CONTENT_TYPES_XML, CUSTOMIZATIONS_XML, SOLUTION_XML, SolutionPackage, is_safe_relative_path,
};
use crate::xml::{self, Document, Element, Node, WriteStyle};

pub const TREE_SOLUTION_XML: &str = "Other/Solution.xml";
/// Elements of a table whose children pack in file order rather than export order; comparisons
/// ignore the order of their children.
pub const UNORDERED_TABLE_PARTS: &[&str] = &["FormXml", "forms", "savedqueries"];
pub const TREE_CUSTOMIZATIONS_XML: &str = "Other/Customizations.xml";

/// Which kind of package to produce or expect (`/packagetype` of SolutionPackager).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageType {
    Unmanaged,
    Managed,
    Both,
}

impl std::str::FromStr for PackageType {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "unmanaged" => Ok(PackageType::Unmanaged),
            "managed" => Ok(PackageType::Managed),
            "both" => Ok(PackageType::Both),
            _ => Err(format!(
                "unknown package type `{text}` (expected unmanaged, managed or both)"
            )),
        }
    }
}

/// An unpacked solution: relative paths (with `/`) to file contents.
#[derive(Debug, Clone, Default)]
pub struct SourceTree {
    pub files: BTreeMap<String, Vec<u8>>,
    /// Where it came from, for error messages.
    pub origin: String,
}

/// How a component row of `customizations.xml` maps to a file of its own in the source layout.
struct RowRule {
    section: &'static str,
    element: &'static str,
    path: fn(&Element) -> Option<String>,
}

fn file_reference(element: &Element, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| element.child_text(name))
        .map(|text| text.trim_start_matches('/').to_string())
}

const ROW_RULES: &[RowRule] = &[
    RowRule {
        section: "Entities",
        element: "Entity",
        path: |e| Some(format!("Entities/{}/Entity.xml", e.child_text("Name")?)),
    },
    RowRule {
        section: "Workflows",
        element: "Workflow",
        path: |e| {
            Some(format!(
                "{}.data.xml",
                file_reference(e, &["JsonFileName", "XamlFileName"])?
            ))
        },
    },
    RowRule {
        section: "optionsets",
        element: "optionset",
        path: |e| Some(format!("OptionSets/{}.xml", e.attribute("Name")?)),
    },
    RowRule {
        section: "WebResources",
        element: "WebResource",
        path: |e| Some(format!("WebResources/{}.data.xml", e.child_text("Name")?)),
    },
    RowRule {
        section: "CanvasApps",
        element: "CanvasApp",
        path: |e| Some(format!("CanvasApps/{}.meta.xml", e.child_text("Name")?)),
    },
    RowRule {
        section: "Connectors",
        element: "Connector",
        path: |e| Some(format!("Connectors/{}.xml", e.child_text("name")?)),
    },
    RowRule {
        section: "SolutionPluginAssemblies",
        element: "PluginAssembly",
        path: |e| Some(format!("{}.data.xml", file_reference(e, &["FileName"])?)),
    },
    RowRule {
        section: "CustomControls",
        element: "CustomControl",
        path: |e| Some(format!("{}.data.xml", file_reference(e, &["FileName"])?)),
    },
    RowRule {
        section: "AppModules",
        element: "AppModule",
        path: |e| {
            Some(format!(
                "AppModules/{}/AppModule.xml",
                e.child_text("UniqueName")?
            ))
        },
    },
    RowRule {
        section: "AppModuleSiteMaps",
        element: "AppModuleSiteMap",
        path: |e| {
            Some(format!(
                "AppModuleSiteMaps/{}/AppModuleSiteMap.xml",
                e.child_text("SiteMapUniqueName")?
            ))
        },
    },
];

/// True when a source-tree path is where a component row lives (not a payload).
pub fn is_row_file(path: &str) -> bool {
    let path = unmanaged_name(path).unwrap_or_else(|| path.to_string());
    let segments: Vec<&str> = path.split('/').collect();
    if path.ends_with(".data.xml") || path.ends_with(".meta.xml") {
        return segments.len() >= 2;
    }
    matches!(
        segments.as_slice(),
        ["Entities", _, "Entity.xml"]
            | ["AppModules", _, "AppModule.xml"]
            | ["AppModuleSiteMaps", _, "AppModuleSiteMap.xml"]
    ) || (segments.len() == 2
        && (segments[0] == "OptionSets" || segments[0] == "Connectors")
        && path.ends_with(".xml"))
}

/// `Foo_managed.xml` -> `Foo.xml`; `None` when the name is not a managed variant.
fn unmanaged_name(path: &str) -> Option<String> {
    let (stem, extension) = path.rsplit_once('.')?;
    if stem.contains('/')
        && stem
            .rsplit('/')
            .next()
            .is_some_and(|name| name.ends_with("_managed"))
        || !stem.contains('/') && stem.ends_with("_managed")
    {
        return Some(format!("{}.{extension}", stem.strip_suffix("_managed")?));
    }
    None
}

/// `Foo.xml` -> `Foo_managed.xml` (the name SolutionPackager gives managed variants in a "Both" tree).
pub fn managed_name(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((stem, extension)) if !extension.contains('/') => {
            format!("{stem}_managed.{extension}")
        }
        _ => format!("{path}_managed"),
    }
}

const EMPTY_CUSTOMIZATIONS: &str = r#"<ImportExportXml xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Entities /><Roles /><Workflows /><FieldSecurityProfiles /><Templates /><EntityMaps /><EntityRelationships /><OrganizationSettings /><optionsets /><CustomControls /><EntityDataProviders /><Languages><Language>1033</Language></Languages></ImportExportXml>"#;

fn tree_style() -> WriteStyle {
    WriteStyle {
        newline: "\n",
        declaration: true,
    }
}

fn zip_style() -> WriteStyle {
    WriteStyle {
        newline: "\r\n",
        declaration: false,
    }
}

/// The value of `<Managed>` in a parsed solution.xml (0, 1 or 2).
pub fn managed_flag(solution: &Document) -> Option<u8> {
    solution
        .root
        .child("SolutionManifest")?
        .child_text("Managed")?
        .parse()
        .ok()
}

fn set_managed_flag(solution: &mut Document, value: u8, path: &str) -> Result<(), SolutionError> {
    let manifest =
        solution
            .root
            .child_mut("SolutionManifest")
            .ok_or_else(|| SolutionError::InvalidXml {
                path: path.to_string(),
                message: "no <SolutionManifest> element".into(),
            })?;
    match manifest.child_mut("Managed") {
        Some(managed) => managed.set_text(&value.to_string()),
        None => {
            let mut managed = Element::new("Managed");
            managed.set_text(&value.to_string());
            manifest.push_element(managed);
        }
    }
    Ok(())
}

/// Splits a solution package into the source layout. The package's own managed flag is kept;
/// asking for `Managed` from an unmanaged package (or the reverse) is an error, because only the
/// platform can convert between the two.
pub fn unpack(
    package: &SolutionPackage,
    expected: Option<PackageType>,
) -> Result<SourceTree, SolutionError> {
    let origin = &package.origin;
    let solution_path = format!("{origin}!{SOLUTION_XML}");
    let solution = xml::parse(package.required(SOLUTION_XML)?, &solution_path)?;
    let managed = managed_flag(&solution).ok_or_else(|| SolutionError::InvalidXml {
        path: solution_path.clone(),
        message: "no <SolutionManifest>/<Managed> value".into(),
    })?;
    match (expected, managed) {
        (Some(PackageType::Managed), 0) => {
            return Err(SolutionError::Invalid(format!(
                "{origin} is an unmanaged solution; it cannot be unpacked as managed (only the platform converts unmanaged to managed)"
            )));
        }
        (Some(PackageType::Unmanaged), 1) => {
            return Err(SolutionError::Invalid(format!(
                "{origin} is a managed solution; unpack it with --package-type managed"
            )));
        }
        _ => {}
    }
    let customizations_path = format!("{origin}!{CUSTOMIZATIONS_XML}");
    let mut customizations =
        xml::parse(package.required(CUSTOMIZATIONS_XML)?, &customizations_path)?;
    let xsi = customizations
        .root
        .attribute("xmlns:xsi")
        .map(str::to_string);

    let mut tree = SourceTree {
        origin: origin.clone(),
        ..SourceTree::default()
    };
    tree.files.insert(
        TREE_SOLUTION_XML.into(),
        solution.to_string_with(tree_style()).into_bytes(),
    );

    for rule in ROW_RULES {
        let Some(section) = customizations.root.child_mut(rule.section) else {
            continue;
        };
        let mut kept = Vec::new();
        for node in std::mem::take(&mut section.children) {
            let Node::Element(mut row) = node else {
                kept.push(node);
                continue;
            };
            let target = (row.name == rule.element)
                .then(|| (rule.path)(&row))
                .flatten()
                .filter(|path| {
                    is_safe_relative_path(path)
                        && is_row_file(path)
                        && !tree.files.contains_key(path)
                });
            match target {
                Some(path) => {
                    if row.name == "Entity" {
                        let folder = path.trim_end_matches("Entity.xml").to_string();
                        for (part, content) in split_entity(&mut row, &folder, xsi.as_deref()) {
                            tree.files.insert(part, content);
                        }
                    }
                    // SolutionPackager declares xsi on every row file but app modules.
                    if let Some(xsi) = &xsi
                        && row.attribute("xmlns:xsi").is_none()
                        && row.name != "AppModule"
                    {
                        row.attributes.push(("xmlns:xsi".into(), xsi.clone()));
                    }
                    let doc = Document {
                        declaration: true,
                        root: row,
                    };
                    tree.files
                        .insert(path, doc.to_string_with(tree_style()).into_bytes());
                }
                None => kept.push(Node::Element(row)),
            }
        }
        if kept
            .iter()
            .all(|node| matches!(node, Node::Text(text) if text.trim().is_empty()))
        {
            kept.clear();
            section.self_closing = true;
        }
        section.children = kept;
    }
    if let Some(section) = customizations.root.child_mut("EntityRelationships") {
        for (path, content) in split_relationships(section, xsi.as_deref()) {
            tree.files.insert(path, content);
        }
    }
    tree.files.insert(
        TREE_CUSTOMIZATIONS_XML.into(),
        customizations.to_string_with(tree_style()).into_bytes(),
    );

    let renames = tree_payload_renames(&customizations_rows_for_renames(package)?, package);
    for (name, data) in &package.entries {
        let renamed = renames
            .iter()
            .find(|(from, _)| from == name)
            .map(|(_, to)| to.clone());
        let name = renamed.as_ref().unwrap_or(name);
        if [SOLUTION_XML, CUSTOMIZATIONS_XML, CONTENT_TYPES_XML]
            .iter()
            .any(|root| name.eq_ignore_ascii_case(root))
        {
            continue;
        }
        if is_row_file(name) || name.starts_with("Other/") || tree.files.contains_key(name) {
            return Err(SolutionError::Invalid(format!(
                "{origin}: entry `{name}` collides with a file of the source layout; this package cannot be unpacked"
            )));
        }
        tree.files
            .insert(name.clone(), normalize_payload_for_tree(name, data));
    }
    Ok(tree)
}

/// The web-resource and connector rows of a package's customizations.xml (for payload renames).
fn customizations_rows_for_renames(
    package: &SolutionPackage,
) -> Result<Vec<Element>, SolutionError> {
    let doc = xml::parse(
        package.required(CUSTOMIZATIONS_XML)?,
        &format!("{}!{CUSTOMIZATIONS_XML}", package.origin),
    )?;
    Ok(doc
        .root
        .elements()
        .filter(|section| section.name == "WebResources" || section.name == "Connectors")
        .flat_map(|section| section.elements().cloned())
        .collect())
}

/// The payloads of a row that SolutionPackager stores under another name than the zip: a web
/// resource at `WebResources/<Name>` (the zip appends its id), custom-connector files under
/// `Connectors/` (the zip uses `Connector/`). Returns (zip path, tree path) pairs.
fn relocated_payloads(row: &Element) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut add = |reference: Option<String>, tree_path: String| {
        if let Some(reference) = reference {
            let zip_path = reference.trim_start_matches('/').to_string();
            if zip_path != tree_path
                && is_safe_relative_path(&zip_path)
                && is_safe_relative_path(&tree_path)
                && !is_row_file(&tree_path)
            {
                pairs.push((zip_path, tree_path));
            }
        }
    };
    match row.name.as_str() {
        "WebResource" => {
            if let Some(name) = row.child_text("Name") {
                add(row.child_text("FileName"), format!("WebResources/{name}"));
            }
        }
        "Connector" => {
            for field in CONNECTOR_FILE_FIELDS {
                if let Some(reference) = row.child_text(field) {
                    let base = reference.rsplit('/').next().unwrap_or_default().to_string();
                    add(Some(reference), format!("Connectors/{base}"));
                }
            }
        }
        _ => {}
    }
    pairs
}

/// Unpack's renames (zip path -> tree path) for payloads the zip has and the tree name leaves free.
fn tree_payload_renames(rows: &[Element], package: &SolutionPackage) -> Vec<(String, String)> {
    let mut renames: Vec<(String, String)> = Vec::new();
    for (zip_path, tree_path) in rows.iter().flat_map(relocated_payloads) {
        let taken =
            package.get(&tree_path).is_some() || renames.iter().any(|(_, to)| to == &tree_path);
        if package.get(&zip_path).is_some() && !taken {
            renames.push((zip_path, tree_path));
        }
    }
    renames
}

/// The children of a `<Connector>` row that name payload files.
const CONNECTOR_FILE_FIELDS: &[&str] = &[
    "openapidefinition",
    "connectionparameters",
    "policytemplateinstances",
    "customcodeblobcontent",
    "scriptoperations",
    "iconblob",
];

/// Forms, app modules and site maps get a `_managed` file in a "Both" tree even when it is identical
/// (as SolutionPackager writes them, which keeps diffs against its output quiet).
fn always_has_managed_variant(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    matches!(segments.as_slice(), ["Entities", _, "FormXml", _, _])
        || matches!(
            segments.as_slice(),
            ["AppModules", _, "AppModule.xml"] | ["AppModuleSiteMaps", _, "AppModuleSiteMap.xml"]
        )
}

/// Unpacks an unmanaged and a managed export of the same solution into one "Both" tree:
/// `<Managed>2</Managed>`, and a `_managed` sibling for every file whose managed form differs and
/// for every form, app module and site map.
pub fn unpack_both(
    unmanaged: &SolutionPackage,
    managed: &SolutionPackage,
) -> Result<SourceTree, SolutionError> {
    let mut tree = unpack(unmanaged, Some(PackageType::Unmanaged))?;
    let managed_tree = unpack(managed, Some(PackageType::Managed))?;
    let mut solution = xml::parse(&tree.files[TREE_SOLUTION_XML], TREE_SOLUTION_XML)?;
    set_managed_flag(&mut solution, 2, TREE_SOLUTION_XML)?;
    tree.files.insert(
        TREE_SOLUTION_XML.into(),
        solution.to_string_with(tree_style()).into_bytes(),
    );
    for (path, data) in managed_tree.files {
        if path == TREE_SOLUTION_XML {
            continue;
        }
        if tree.files.get(&path) != Some(&data) || always_has_managed_variant(&path) {
            tree.files.insert(managed_name(&path), data);
        }
    }
    Ok(tree)
}

fn normalize_payload_for_tree(name: &str, data: &[u8]) -> Vec<u8> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".json")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(strip_bom(data))
        && let Ok(text) = serde_json::to_string_pretty(&value)
    {
        return text.into_bytes();
    }
    // Payload XML (control manifests, env-var definitions, ...) keeps its layout, as SolutionPackager
    // does; only line endings become LF.
    if lower.ends_with(".xml")
        && let Ok(text) = std::str::from_utf8(data)
    {
        return text.replace("\r\n", "\n").into_bytes();
    }
    data.to_vec()
}

fn strip_bom(data: &[u8]) -> &[u8] {
    data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data)
}

fn to_crlf(data: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(strip_bom(data)) {
        Ok(text) => text
            .replace("\r\n", "\n")
            .replace('\n', "\r\n")
            .into_bytes(),
        Err(_) => data.to_vec(),
    }
}

/// Picks the files of one package type from a tree: in a "Both" tree a managed pack takes
/// `X_managed.ext` in place of `X.ext`, an unmanaged pack ignores the `_managed` files.
fn select_variant(tree: &SourceTree, managed: bool, both: bool) -> BTreeMap<String, &[u8]> {
    let mut selected = BTreeMap::new();
    for (path, data) in &tree.files {
        if both && let Some(base) = unmanaged_name(path) {
            if managed {
                selected.insert(base, data.as_slice());
            }
            continue;
        }
        if !(both && managed && tree.files.contains_key(&managed_name(path))) {
            selected.insert(path.clone(), data.as_slice());
        }
    }
    selected
}

/// Merges a source tree back into a package. `package_type` `None` packs what the tree holds
/// (unmanaged for a "Both" tree).
pub fn pack(
    tree: &SourceTree,
    package_type: Option<PackageType>,
) -> Result<SolutionPackage, SolutionError> {
    let origin = if tree.origin.is_empty() {
        "source folder".to_string()
    } else {
        tree.origin.clone()
    };
    // The YAML source-control format (pac 2.4.1+ `clone`/`sync`, Dataverse Git integration).
    if let Some(manifest) = tree.files.keys().find(|path| {
        let segments: Vec<&str> = path.split('/').collect();
        matches!(segments.as_slice(), ["solutions", _, "solution.yml"])
    }) {
        return Err(SolutionError::Invalid(format!(
            "{origin}: {manifest} is the YAML source-control format (pac solution clone/sync 2.4.1+, Dataverse Git integration), which Lockgate does not read yet; unpack the solution with `lockgate solution unpack` (classic XML layout)"
        )));
    }
    let solution_bytes =
        tree.files
            .get(TREE_SOLUTION_XML)
            .ok_or_else(|| SolutionError::Missing {
                path: PathBuf::from(&origin),
                what: format!("{TREE_SOLUTION_XML} (not an unpacked solution folder)"),
            })?;
    let mut solution = xml::parse(solution_bytes, &format!("{origin}/{TREE_SOLUTION_XML}"))?;
    let flag = managed_flag(&solution).ok_or_else(|| SolutionError::InvalidXml {
        path: TREE_SOLUTION_XML.into(),
        message: "no <SolutionManifest>/<Managed> value".into(),
    })?;
    let managed = match (package_type, flag) {
        (Some(PackageType::Both), _) => {
            return Err(SolutionError::Invalid(
                "pack writes one zip: choose --package-type unmanaged or managed".into(),
            ));
        }
        (Some(PackageType::Managed), 0) => {
            return Err(SolutionError::Invalid(format!(
                "{origin}: {TREE_SOLUTION_XML} holds an unmanaged solution (<Managed>0</Managed>); a managed package can only be packed from a managed or \"Both\" unpack"
            )));
        }
        (Some(PackageType::Unmanaged), 1) => {
            return Err(SolutionError::Invalid(format!(
                "{origin}: {TREE_SOLUTION_XML} holds a managed solution (<Managed>1</Managed>); it cannot be packed as unmanaged"
            )));
        }
        (Some(PackageType::Managed), _) => true,
        (Some(PackageType::Unmanaged), _) => false,
        (None, flag) => flag == 1,
    };
    let files = select_variant(tree, managed, flag == 2);
    set_managed_flag(&mut solution, u8::from(managed), TREE_SOLUTION_XML)?;

    // `pac solution init` commits only Other/Solution.xml; an absent Customizations.xml means no components.
    let customizations_bytes = files
        .get(TREE_CUSTOMIZATIONS_XML)
        .copied()
        .unwrap_or(EMPTY_CUSTOMIZATIONS.as_bytes());
    let mut customizations = xml::parse(
        customizations_bytes,
        &format!("{origin}/{TREE_CUSTOMIZATIONS_XML}"),
    )?;
    let xsi = customizations
        .root
        .attribute("xmlns:xsi")
        .map(str::to_string);

    let mut consumed: Vec<String> = vec![TREE_SOLUTION_XML.into(), TREE_CUSTOMIZATIONS_XML.into()];
    let mut renames: Vec<(String, String)> = Vec::new();
    for (path, data) in &files {
        if !is_row_file(path) {
            continue;
        }
        let mut row = xml::parse(data, &format!("{origin}/{path}"))?.root;
        let Some(rule) = ROW_RULES.iter().find(|rule| rule.element == row.name) else {
            return Err(SolutionError::InvalidXml {
                path: path.clone(),
                message: format!("<{}> is not a component row this packer knows", row.name),
            });
        };
        if xsi.is_some() && row.attribute("xmlns:xsi") == xsi.as_deref() {
            row.remove_attribute("xmlns:xsi");
        }
        if row.name == "Entity" {
            merge_split_entity(&mut row, path, &files, &mut consumed)?;
        }
        renames.extend(payload_renames(&row, &files));
        section_of(&mut customizations.root, rule.section).push_element(row);
        consumed.push(path.clone());
    }
    merge_split_relationships(&mut customizations.root, &files, &mut consumed)?;

    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    entries.push((
        CUSTOMIZATIONS_XML.into(),
        customizations.to_string_with(zip_style()).into_bytes(),
    ));
    entries.push((
        SOLUTION_XML.into(),
        solution.to_string_with(zip_style()).into_bytes(),
    ));
    let mut payloads: Vec<(String, Vec<u8>)> = Vec::new();
    for (path, data) in &files {
        if consumed.contains(path)
            || path.starts_with("Other/")
            || path.starts_with("CanvasApps/src/")
        {
            continue;
        }
        if !is_safe_relative_path(path) {
            return Err(SolutionError::PathTraversal {
                path: PathBuf::from(&origin),
                entry: path.clone(),
            });
        }
        let target = renames
            .iter()
            .find(|(from, _)| from == path)
            .map_or(path.clone(), |(_, to)| to.clone());
        let lower = path.to_ascii_lowercase();
        let bytes = if lower.ends_with(".json") || lower.ends_with(".xml") {
            to_crlf(data)
        } else {
            data.to_vec()
        };
        payloads.push((target, bytes));
    }
    payloads.sort();
    entries.extend(payloads);
    Ok(SolutionPackage { entries, origin })
}

/// The section element under the customizations root, created before `<Languages>` when absent.
fn section_of<'a>(root: &'a mut Element, name: &str) -> &'a mut Element {
    let index = match root
        .children
        .iter()
        .position(|node| matches!(node, Node::Element(e) if e.name == name))
    {
        Some(index) => index,
        None => {
            let at = root
                .children
                .iter()
                .position(|node| matches!(node, Node::Element(e) if e.name == "Languages"))
                .unwrap_or(root.children.len());
            root.children.insert(at, Node::Element(Element::new(name)));
            at
        }
    };
    match &mut root.children[index] {
        Node::Element(section) => {
            section.self_closing = false;
            if section
                .children
                .iter()
                .all(|node| matches!(node, Node::Text(_)))
            {
                section.children.clear();
            }
            section
        }
        _ => unreachable!("index points at an element"),
    }
}

/// Pack's renames (tree path -> zip path): the reverse of [`tree_payload_renames`], for payloads
/// the tree holds under SolutionPackager's name while the zip path is free.
fn payload_renames(row: &Element, files: &BTreeMap<String, &[u8]>) -> Vec<(String, String)> {
    relocated_payloads(row)
        .into_iter()
        .filter(|(zip_path, tree_path)| {
            !files.contains_key(zip_path) && files.contains_key(tree_path)
        })
        .map(|(zip_path, tree_path)| (tree_path, zip_path))
        .collect()
}

/// A part file: `root` holding `children`, with the `xmlns:xsi` declaration SolutionPackager adds.
fn part_file(root: &str, children: Vec<Node>, xsi: Option<&str>) -> Vec<u8> {
    let mut element = Element::new(root);
    if let Some(xsi) = xsi {
        element.set_attribute("xmlns:xsi", xsi);
    }
    element.self_closing = children.is_empty();
    element.children = children;
    Document {
        declaration: true,
        root: element,
    }
    .to_string_with(tree_style())
    .into_bytes()
}

/// The GUID text of a child (`{...}`), when it is usable as a file name.
fn guid_name(element: &Element, child: &str) -> Option<String> {
    let text = element.child_text(child)?.to_ascii_lowercase();
    let bare = text.trim_start_matches('{').trim_end_matches('}');
    (!bare.is_empty() && bare.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        .then(|| format!("{{{bare}}}"))
}

/// Splits a table the way SolutionPackager does: each form to `FormXml/<type>/{formid}.xml`, each
/// view to `SavedQueries/{savedqueryid}.xml`, the ribbon to `RibbonDiff.xml`, leaving empty
/// placeholders in the row. A part whose shape is unexpected stays inside the row.
fn split_entity(entity: &mut Element, folder: &str, xsi: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut parts = Vec::new();
    let is_element_or_blank = |node: &Node| {
        matches!(node, Node::Element(_)) || matches!(node, Node::Text(t) if t.trim().is_empty())
    };
    if let Some(form_xml) = entity.child_mut("FormXml") {
        let mut planned = Vec::new();
        let splittable = form_xml.children.iter().all(is_element_or_blank)
            && form_xml.elements().all(|forms| {
                let kind = forms.attribute("type").unwrap_or_default();
                forms.name == "forms"
                    && forms.attributes.len() == 1
                    && !kind.is_empty()
                    && kind.chars().all(|c| c.is_ascii_alphanumeric())
                    && forms.children.iter().all(is_element_or_blank)
                    && forms.elements().all(|form| {
                        let name = guid_name(form, "formid");
                        if let Some(name) = &name {
                            planned.push(format!("{folder}FormXml/{kind}/{name}.xml"));
                        }
                        form.name == "systemform" && name.is_some()
                    })
            });
        let unique = planned
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == planned.len();
        if splittable && unique && !planned.is_empty() {
            for forms in form_xml.elements() {
                let kind = forms.attribute("type").unwrap_or_default();
                for form in forms.elements() {
                    let name = guid_name(form, "formid").unwrap_or_default();
                    let path = format!("{folder}FormXml/{kind}/{name}.xml");
                    parts.push((
                        path,
                        part_file("forms", vec![Node::Element(form.clone())], xsi),
                    ));
                }
            }
            form_xml.children.clear();
            form_xml.self_closing = true;
        }
    }
    if let Some(wrapper) = entity.child_mut("SavedQueries") {
        let queries: Vec<&Element> = wrapper.elements().collect();
        let splittable = wrapper.children.iter().all(is_element_or_blank)
            && queries.len() == 1
            && queries[0].name == "savedqueries"
            && queries[0].attributes.is_empty()
            && queries[0].children.iter().all(is_element_or_blank)
            && queries[0].elements().all(|query| {
                query.name == "savedquery" && guid_name(query, "savedqueryid").is_some()
            });
        let names: Vec<String> = if splittable {
            queries[0]
                .elements()
                .filter_map(|q| guid_name(q, "savedqueryid"))
                .collect()
        } else {
            Vec::new()
        };
        let unique = names
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == names.len();
        if splittable && unique && !names.is_empty() {
            for query in queries[0].elements() {
                let name = guid_name(query, "savedqueryid").unwrap_or_default();
                parts.push((
                    format!("{folder}SavedQueries/{name}.xml"),
                    part_file("savedqueries", vec![Node::Element(query.clone())], xsi),
                ));
            }
            wrapper.children.clear();
            wrapper.self_closing = true;
        }
    }
    if let Some(index) = entity.children.iter().position(|node| matches!(node, Node::Element(e) if e.name == "RibbonDiffXml" && e.elements().next().is_some()))
        && let Node::Element(ribbon) = &mut entity.children[index]
    {
        let mut taken = std::mem::replace(ribbon, Element::new("RibbonDiffXml"));
        if let Some(xsi) = xsi {
            taken.set_attribute("xmlns:xsi", xsi);
        }
        parts.push((format!("{folder}RibbonDiff.xml"), Document { declaration: true, root: taken }.to_string_with(tree_style()).into_bytes()));
    }
    parts
}

/// The table a relationship is filed under: the referenced table of a one-to-many relationship, the
/// first table of a many-to-many one (as in SolutionPackager's `Other/Relationships/<Table>.xml`).
fn relationship_table(relationship: &Element) -> Option<String> {
    let table = relationship
        .child_text("ReferencedEntityName")
        .or_else(|| relationship.child_text("FirstEntityName"))?;
    (!table.is_empty() && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(table)
}

/// Splits `<EntityRelationships>` into `Other/Relationships.xml` (the names, sorted) and one
/// `Other/Relationships/<Table>.xml` per table, as SolutionPackager does; left alone when any
/// relationship lacks a name or table.
fn split_relationships(section: &mut Element, xsi: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let relationships: Vec<&Element> = section.elements().collect();
    let splittable = !relationships.is_empty()
        && section.children.iter().all(|node| {
            matches!(node, Node::Element(_)) || matches!(node, Node::Text(t) if t.trim().is_empty())
        })
        && relationships.iter().all(|r| {
            r.name == "EntityRelationship"
                && r.attribute("Name").is_some()
                && relationship_table(r).is_some()
        });
    if !splittable {
        return Vec::new();
    }
    let mut names: Vec<String> = relationships
        .iter()
        .filter_map(|r| r.attribute("Name").map(str::to_string))
        .collect();
    names.sort_by_key(|name| name.to_ascii_lowercase());
    let index: Vec<Node> = names
        .iter()
        .map(|name| {
            let mut entry = Element::new("EntityRelationship");
            entry.set_attribute("Name", name);
            Node::Element(entry)
        })
        .collect();
    let mut by_table: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    for relationship in relationships {
        let table = relationship_table(relationship).unwrap_or_default();
        by_table
            .entry(table)
            .or_default()
            .push(Node::Element(relationship.clone()));
    }
    let mut parts = vec![(
        "Other/Relationships.xml".to_string(),
        part_file("EntityRelationships", index, xsi),
    )];
    for (table, children) in by_table {
        parts.push((
            format!("Other/Relationships/{table}.xml"),
            part_file("EntityRelationships", children, xsi),
        ));
    }
    section.children.clear();
    section.self_closing = true;
    parts
}

/// Microsoft's layout splits an entity into `Entity.xml`, `FormXml/<type>/*.xml`, `SavedQueries/*.xml`
/// and `RibbonDiff.xml`; this puts those parts back into the `<Entity>` row.
fn merge_split_entity(
    entity: &mut Element,
    entity_path: &str,
    files: &BTreeMap<String, &[u8]>,
    consumed: &mut Vec<String>,
) -> Result<(), SolutionError> {
    let folder = entity_path.trim_end_matches("Entity.xml");
    let mut forms: BTreeMap<String, Element> = BTreeMap::new();
    let mut saved_queries: Option<Element> = None;
    let mut ribbon: Option<Element> = None;
    for (path, data) in files.range(folder.to_string()..) {
        let Some(rest) = path.strip_prefix(folder) else {
            break;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["FormXml", form_type, file] if file.ends_with(".xml") => {
                let doc = xml::parse(data, path)?;
                let forms_element = forms.entry(form_type.to_string()).or_insert_with(|| {
                    let mut element = Element::new("forms");
                    element.set_attribute("type", form_type);
                    element
                });
                forms_element.self_closing = false;
                forms_element.children.extend(
                    doc.root
                        .children
                        .into_iter()
                        .filter(|node| matches!(node, Node::Element(_))),
                );
            }
            ["SavedQueries", file] if file.ends_with(".xml") => {
                let doc = xml::parse(data, path)?;
                let target = saved_queries.get_or_insert_with(|| Element::new("savedqueries"));
                target.self_closing = false;
                target.children.extend(
                    doc.root
                        .children
                        .into_iter()
                        .filter(|node| matches!(node, Node::Element(_))),
                );
            }
            ["RibbonDiff.xml"] => {
                let mut doc = xml::parse(data, path)?;
                doc.root.remove_attribute("xmlns:xsi");
                ribbon = Some(doc.root);
            }
            _ => continue,
        }
        consumed.push(path.clone());
    }
    // Microsoft's Entity.xml keeps empty `<FormXml />`, `<SavedQueries />`, `<RibbonDiffXml />` placeholders.
    if !forms.is_empty() {
        let form_xml = empty_child_slot(entity, "FormXml");
        if let Some(form_xml) = form_xml {
            form_xml.self_closing = false;
            form_xml.children = forms.into_values().map(Node::Element).collect();
        }
    }
    if let Some(queries) = saved_queries
        && let Some(wrapper) = empty_child_slot(entity, "SavedQueries")
    {
        wrapper.self_closing = false;
        wrapper.children = vec![Node::Element(queries)];
    }
    if let Some(ribbon) = ribbon
        && let Some(slot) = empty_child_slot(entity, "RibbonDiffXml")
    {
        *slot = ribbon;
    }
    Ok(())
}

/// The named child when it is absent (appended) or empty; `None` when it already has content.
fn empty_child_slot<'a>(parent: &'a mut Element, name: &str) -> Option<&'a mut Element> {
    let index = match parent
        .children
        .iter()
        .position(|node| matches!(node, Node::Element(e) if e.name == name))
    {
        Some(index) => index,
        None => {
            parent.self_closing = false;
            parent.children.push(Node::Element(Element::new(name)));
            parent.children.len() - 1
        }
    };
    match &mut parent.children[index] {
        Node::Element(element) if element.elements().next().is_none() => Some(element),
        _ => None,
    }
}

/// Microsoft's layout keeps relationships in `Other/Relationships/<Table>.xml`; they go back into
/// `<EntityRelationships>` unless that section already holds them.
fn merge_split_relationships(
    root: &mut Element,
    files: &BTreeMap<String, &[u8]>,
    consumed: &mut Vec<String>,
) -> Result<(), SolutionError> {
    let parts: Vec<(&String, &&[u8])> = files
        .range("Other/Relationships/".to_string()..)
        .take_while(|(path, _)| path.starts_with("Other/Relationships/"))
        .collect();
    if parts.is_empty() {
        return Ok(());
    }
    let already = root
        .child("EntityRelationships")
        .is_some_and(|section| section.elements().next().is_some());
    for (path, data) in parts {
        consumed.push(path.clone());
        if already {
            continue;
        }
        let doc = xml::parse(data, path)?;
        let section = section_of(root, "EntityRelationships");
        section.children.extend(
            doc.root
                .children
                .into_iter()
                .filter(|node| matches!(node, Node::Element(_))),
        );
    }
    Ok(())
}

impl SourceTree {
    /// Reads every file under `dir` (hidden files and folders, whose names start with `.`, are skipped).
    pub fn read_dir(dir: &Path) -> Result<Self, SolutionError> {
        let mut tree = SourceTree::default();
        let mut pending = vec![(dir.to_path_buf(), String::new())];
        while let Some((folder, prefix)) = pending.pop() {
            let listing =
                std::fs::read_dir(&folder).map_err(|err| SolutionError::io(&folder, err))?;
            for entry in listing {
                let entry = entry.map_err(|err| SolutionError::io(&folder, err))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let relative = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                let kind = entry
                    .file_type()
                    .map_err(|err| SolutionError::io(&path, err))?;
                if kind.is_dir() {
                    pending.push((path, relative));
                } else if kind.is_file() {
                    let data = std::fs::read(&path).map_err(|err| SolutionError::io(&path, err))?;
                    tree.files.insert(relative, data);
                }
            }
        }
        tree.origin = dir.display().to_string();
        Ok(tree)
    }

    /// Replaces `dir` with exactly this tree: writes a sibling temporary folder, then swaps it in.
    /// Refuses to replace a folder that holds a `.git` entry.
    pub fn write_dir(&self, dir: &Path) -> Result<(), SolutionError> {
        // `.`, `..` and `src/` have no usable file name or parent until made absolute and normal.
        let absolute = if dir.exists() {
            dir.canonicalize()
        } else {
            std::path::absolute(dir)
        };
        let absolute = absolute.map_err(|err| SolutionError::io(dir, err))?;
        let dir = absolute.as_path();
        if dir.parent().is_none() {
            return Err(SolutionError::Invalid(format!(
                "{}: refusing to replace the root folder",
                dir.display()
            )));
        }
        if dir.join(".git").exists() {
            return Err(SolutionError::Invalid(format!(
                "{}: refusing to replace a folder that holds .git; unpack into a subfolder such as {}/src",
                dir.display(),
                dir.display()
            )));
        }
        let parent = dir
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|err| SolutionError::io(parent, err))?;
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unpacked".into());
        let temp = parent.join(format!(".{name}.unpack-{}", std::process::id()));
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&temp);
        let result = self.write_files_into(&temp).and_then(|()| {
            if dir.exists() {
                std::fs::rename(dir, &old).map_err(|err| SolutionError::io(dir, err))?;
            }
            std::fs::rename(&temp, dir).map_err(|err| SolutionError::io(dir, err))
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&temp);
            if old.exists() && !dir.exists() {
                let _ = std::fs::rename(&old, dir);
            }
        }
        let _ = std::fs::remove_dir_all(&old);
        result
    }

    fn write_files_into(&self, root: &Path) -> Result<(), SolutionError> {
        for (path, data) in &self.files {
            if !is_safe_relative_path(path) {
                return Err(SolutionError::PathTraversal {
                    path: root.to_path_buf(),
                    entry: path.clone(),
                });
            }
            let target = root.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|err| SolutionError::io(parent, err))?;
            }
            std::fs::write(&target, data).map_err(|err| SolutionError::io(&target, err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_variant_names_round_trip() {
        assert_eq!(
            managed_name("Entities/a/Entity.xml"),
            "Entities/a/Entity_managed.xml"
        );
        assert_eq!(
            unmanaged_name("Entities/a/Entity_managed.xml").as_deref(),
            Some("Entities/a/Entity.xml")
        );
        assert_eq!(
            unmanaged_name("Other/Customizations_managed.xml").as_deref(),
            Some("Other/Customizations.xml")
        );
        assert_eq!(unmanaged_name("Entities/a/Entity.xml"), None);
    }

    #[test]
    fn row_files_are_told_apart_from_payloads() {
        assert!(is_row_file("Workflows/Flow-1234.json.data.xml"));
        assert!(is_row_file("Entities/account/Entity.xml"));
        assert!(is_row_file("OptionSets/x.xml"));
        assert!(!is_row_file("Workflows/Flow-1234.json"));
        assert!(!is_row_file(
            "environmentvariabledefinitions/x/environmentvariabledefinition.xml"
        ));
        assert!(!is_row_file("Controls/x/ControlManifest.xml"));
    }
}

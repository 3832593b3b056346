//! Builds solution packages in code, in the shape Microsoft's exports have (CRLF XML, flow JSON, env-var
//! folders), for tests and benchmarks: any number of cloud flows, with or without the usual problems.

use crate::package::SolutionPackage;

/// What the generated solution should contain.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub unique_name: String,
    pub version: String,
    pub managed: bool,
    pub flows: usize,
    /// Ship a current value for the environment variable inside the solution.
    pub value_in_solution: bool,
    /// Make the first flow use an embedded connection instead of a connection reference.
    pub embedded_connection: bool,
    /// Make the first flow use an environment variable that the solution does not define.
    pub undefined_variable: bool,
    /// Add a missing dependency on the `account` table.
    pub missing_dependency: bool,
    /// The solution's display name (any text; it is escaped).
    pub display_name: String,
    /// Flows are named `<flow_name> <index>` (any text; it is escaped).
    pub flow_name: String,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            unique_name: "ContosoTravel".into(),
            version: "1.0.0.1".into(),
            managed: false,
            flows: 1,
            value_in_solution: false,
            embedded_connection: false,
            undefined_variable: false,
            missing_dependency: false,
            display_name: "Contoso Travel".into(),
            flow_name: "Trip approval".into(),
        }
    }
}

/// The id of generated flow `index`: a GUID-shaped, lower-case string.
pub fn flow_id(index: usize) -> String {
    format!("{index:08x}-595a-ee11-be6f-6045bd033774")
}

/// The zip path of generated flow `index`.
pub fn flow_file(index: usize) -> String {
    format!(
        "Workflows/TripApproval{index}-{}.json",
        flow_id(index).to_ascii_uppercase()
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

/// Generates a package: one table, `flows` cloud flows, one connection reference, one environment variable.
pub fn sample(options: &SampleOptions) -> SolutionPackage {
    let mut roots = String::new();
    roots.push_str("      <RootComponent type=\"1\" schemaName=\"cts_trip\" behavior=\"0\" />\n");
    for index in 0..options.flows {
        roots.push_str(&format!(
            "      <RootComponent type=\"29\" id=\"{{{}}}\" behavior=\"0\" />\n",
            flow_id(index)
        ));
    }
    let missing = if options.missing_dependency {
        "    <MissingDependencies>\n      <MissingDependency>\n        <Required type=\"1\" schemaName=\"account\" displayName=\"Account\" solution=\"Active\" />\n        <Dependent type=\"2\" schemaName=\"cts_accountid\" displayName=\"Account\" parentSchemaName=\"cts_trip\" />\n      </MissingDependency>\n    </MissingDependencies>\n".to_string()
    } else {
        "    <MissingDependencies />\n".to_string()
    };
    let solution = format!(
        r#"<ImportExportXml version="9.2.23083.184" SolutionPackageVersion="9.2" languagecode="1033" generatedBy="CrmLive" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <SolutionManifest>
    <UniqueName>{name}</UniqueName>
    <LocalizedNames>
      <LocalizedName description="{display}" languagecode="1033" />
    </LocalizedNames>
    <Descriptions />
    <Version>{version}</Version>
    <Managed>{managed}</Managed>
    <Publisher>
      <UniqueName>contoso</UniqueName>
      <LocalizedNames>
        <LocalizedName description="Contoso" languagecode="1033" />
      </LocalizedNames>
      <Descriptions />
      <EMailAddress xsi:nil="true"></EMailAddress>
      <SupportingWebsiteUrl xsi:nil="true"></SupportingWebsiteUrl>
      <CustomizationPrefix>cts</CustomizationPrefix>
      <CustomizationOptionValuePrefix>10000</CustomizationOptionValuePrefix>
    </Publisher>
    <RootComponents>
{roots}    </RootComponents>
{missing}  </SolutionManifest>
</ImportExportXml>"#,
        name = options.unique_name,
        display = escape(&options.display_name),
        version = options.version,
        managed = u8::from(options.managed),
    );
    let mut workflows = String::new();
    for index in 0..options.flows {
        workflows.push_str(&format!(
            r#"    <Workflow WorkflowId="{{{id}}}" Name="{flow_name} {index}">
      <JsonFileName>/{file}</JsonFileName>
      <Type>1</Type>
      <Subprocess>0</Subprocess>
      <Category>5</Category>
      <Mode>0</Mode>
      <Scope>4</Scope>
      <StateCode>1</StateCode>
      <StatusCode>2</StatusCode>
      <IntroducedVersion>1.0.0.0</IntroducedVersion>
      <IsCustomizable>1</IsCustomizable>
      <PrimaryEntity>none</PrimaryEntity>
      <LocalizedNames>
        <LocalizedName languagecode="1033" description="{flow_name} {index}" />
      </LocalizedNames>
    </Workflow>
"#,
            id = flow_id(index),
            file = flow_file(index),
            flow_name = escape(&options.flow_name),
        ));
    }
    let customizations = format!(
        r#"<ImportExportXml xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Entities>
    <Entity>
      <Name LocalizedName="Trip" OriginalName="Trip">cts_trip</Name>
      <EntityInfo>
        <entity Name="cts_trip">
          <LocalizedNames>
            <LocalizedName description="Trip" languagecode="1033" />
          </LocalizedNames>
          <attributes>
            <attribute PhysicalName="cts_destination">
              <Type>nvarchar</Type>
              <Name>cts_destination</Name>
              <DisplayMask>ValidForAdvancedFind|ValidForForm|ValidForGrid</DisplayMask>
            </attribute>
          </attributes>
        </entity>
      </EntityInfo>
      <FormXml>
        <forms type="main">
          <systemform>
            <formid>{{1b0c2d3e-0000-4000-8000-000000000001}}</formid>
            <form><tabs><tab name="general"><labels><label description="General" languagecode="1033" /></labels></tab></tabs></form>
          </systemform>
        </forms>
      </FormXml>
    </Entity>
  </Entities>
  <Roles></Roles>
  <Workflows>
{workflows}  </Workflows>
  <FieldSecurityProfiles></FieldSecurityProfiles>
  <Templates />
  <EntityMaps />
  <EntityRelationships />
  <OrganizationSettings />
  <optionsets>
    <optionset Name="cts_triptype" localizedName="Trip type">
      <OptionSetType>picklist</OptionSetType>
      <IsGlobal>1</IsGlobal>
      <options>
        <option value="100000000"><labels><label description="Business &amp; travel" languagecode="1033" /></labels></option>
      </options>
    </optionset>
  </optionsets>
  <CustomControls />
  <EntityDataProviders />
  <connectionreferences>
    <connectionreference connectionreferencelogicalname="cts_sharedapprovals_1a2b3">
      <connectionreferencedisplayname>Approvals</connectionreferencedisplayname>
      <connectorid>/providers/Microsoft.PowerApps/apis/shared_approvals</connectorid>
      <iscustomizable>1</iscustomizable>
      <statecode>0</statecode>
      <statuscode>1</statuscode>
    </connectionreference>
  </connectionreferences>
  <Languages>
    <Language>1033</Language>
  </Languages>
</ImportExportXml>"#
    );
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("customizations.xml".into(), crlf(&customizations)),
        ("solution.xml".into(), crlf(&solution)),
    ];
    for index in 0..options.flows {
        let embedded = options.embedded_connection && index == 0;
        let connection = if embedded {
            r#"{"runtimeSource":"embedded","connection":{},"api":{"name":"shared_approvals"}}"#
                .to_string()
        } else {
            r#"{"runtimeSource":"invoker","connection":{"connectionReferenceLogicalName":"cts_sharedapprovals_1a2b3"},"api":{"name":"shared_approvals"}}"#.to_string()
        };
        let extra_variable = if options.undefined_variable && index == 0 {
            r#","Budget (cts_Budget)":{"type":"Number","metadata":{"schemaName":"cts_Budget"}}"#
        } else {
            ""
        };
        let flow = format!(
            r#"{{"properties":{{"connectionReferences":{{"shared_approvals":{connection}}},"definition":{{"$schema":"https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#","contentVersion":"1.0.0.0","parameters":{{"$connections":{{"defaultValue":{{}},"type":"Object"}},"$authentication":{{"defaultValue":{{}},"type":"SecureObject"}},"Api url (cts_ApiUrl)":{{"type":"String","metadata":{{"schemaName":"cts_ApiUrl"}}}}{extra_variable}}},"triggers":{{"manual":{{"type":"Request","kind":"Button","inputs":{{}}}}}},"actions":{{"Start_approval_{index}":{{"runAfter":{{}},"type":"OpenApiConnectionWebhook","inputs":{{"host":{{"connectionName":"shared_approvals","operationId":"StartAndWaitForAnApproval","apiId":"/providers/Microsoft.PowerApps/apis/shared_approvals"}},"parameters":{{"approvalType":"Basic","WebhookApprovalCreationInput/title":"Trip {index}"}}}}}}}}}}}},"schemaVersion":"1.0.0.0"}}"#
        );
        entries.push((flow_file(index), flow.into_bytes()));
    }
    entries.push((
        "environmentvariabledefinitions/cts_ApiUrl/environmentvariabledefinition.xml".into(),
        crlf(
            r#"<environmentvariabledefinition schemaname="cts_ApiUrl">
  <defaultvalue>https://api.contoso.example</defaultvalue>
  <displayname default="Api url">
    <label description="Api url" languagecode="1033" />
  </displayname>
  <introducedversion>1.0.0.0</introducedversion>
  <iscustomizable>1</iscustomizable>
  <isrequired>0</isrequired>
  <secretstore>0</secretstore>
  <type>100000000</type>
</environmentvariabledefinition>"#,
        ),
    ));
    if options.value_in_solution {
        entries.push((
            "environmentvariabledefinitions/cts_ApiUrl/environmentvariablevalues.json".into(),
            crlf("{\n  \"environmentvariablevalues\": {\n    \"environmentvariablevalue\": {\n      \"@environmentvariablevalueid\": \"02b34632-9c07-ec11-94ef-00224826aa05\",\n      \"iscustomizable\": \"1\",\n      \"value\": \"https://dev.contoso.example\"\n    }\n  }\n}"),
        ));
    }
    entries.push((
        "CanvasApps/cts_tripapp_BackgroundImageUri".into(),
        vec![0x89, b'P', b'N', b'G', 0, 1, 2, 255],
    ));
    SolutionPackage {
        entries,
        origin: format!("{}.zip", options.unique_name),
    }
}

//! Power Platform solution packages (unpack, pack, diff, check, settings, version) and the Dataverse Web API client.

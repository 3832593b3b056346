//! Integration tests of lockgate-solution, one module per area; corpus tests read
//! /work/shared/corpus/powerplatform (or $LOCKGATE_POWERPLATFORM_CORPUS) and say so when it is absent.

mod corpus;
mod dataverse;
mod dataverse_server;
mod properties;
mod roundtrip;

import type { CodegenConfig } from "@graphql-codegen/cli";
import { addTypenameSelectionDocumentTransform } from "@graphql-codegen/client-preset";

const scalars = { DateTime: "string", JSON: "unknown", Upload: "unknown" };

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  generates: {
    // types for the operations in operations/*.graphql (typed-client.ts uses them)
    "generated/graphql.ts": {
      documents: ["operations/*.graphql"],
      plugins: ["typescript-operations"],
      config: { strictScalars: true, scalars, enumsAsTypes: true, useTypeImports: true },
    },
    // the client preset: typed documents from the graphql() calls in preset-client.ts,
    // and persisted-documents.json, the manifest GQL_MEDIA_TRUSTED_DOCUMENTS reads
    "generated/client/": {
      documents: ["preset-client.ts"],
      preset: "client",
      presetConfig: { persistedDocuments: true, fragmentMasking: false },
      // Apollo Client's cache asks for __typename: listed in the documents themselves, it
      // is part of what the manifest holds and the server runs
      documentTransforms: [addTypenameSelectionDocumentTransform],
      config: {
        strictScalars: true,
        scalars,
        enumsAsTypes: true,
        useTypeImports: true,
        emitLegacyCommonJSImports: false,
      },
    },
  },
};

export default config;

import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["operations/*.graphql"],
  generates: {
    "generated/graphql.ts": {
      plugins: ["typescript-operations"],
      config: {
        strictScalars: true,
        scalars: { DateTime: "string", JSON: "unknown", Upload: "unknown" },
        enumsAsTypes: true,
        useTypeImports: true,
      },
    },
  },
};

export default config;

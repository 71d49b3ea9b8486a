"""A bundle on disk: its manifest (the contract), the formats it may hold, its file layout and
checksums, its tokenizer, and its parity material. Knows no runtime."""

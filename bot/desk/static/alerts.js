// Inbound spike banner (placeholder: being built).
"use strict";

# Shared by the azd hooks (sourced, not run): messages, lower-casing, list membership, deployment names.
# POSIX sh only (dash on Debian, sh on macOS): no arrays, no [[ ]], no ${var,,}.

die() { echo "error: $*" >&2; exit 1; }
warn() { echo "warning: $*" >&2; }
lower() { printf '%s' "$1" | tr 'A-Z' 'a-z'; }

# in_list VALUE LIST: VALUE is one of the comma-separated LIST (case-insensitive, blanks around items ignored).
in_list() {
  case ",$(lower "$2" | tr -d ' ')," in
    *",$(lower "$1"),"*) return 0 ;;
    *) return 1 ;;
  esac
}

# deployment_name STAGE SUFFIX: "acr-dlp-<stage>-<location>-<suffix>", at most 64 characters (ARM's limit). The
# location is part of it: a subscription deployment of the same name in another location is refused.
deployment_name() {
  printf 'acr-dlp-%s-%s-%s' "$1" "$(lower "${AZURE_LOCATION:-}")" "$2" | cut -c1-64
}

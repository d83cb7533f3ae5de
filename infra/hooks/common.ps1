# Shared by the azd hooks on Windows (dot-sourced, not run): the same helpers as common.sh.

function Fail([string]$message) { throw "error: $message" }
function Warn([string]$message) { Write-Warning $message }

# The items of a comma-separated list: trimmed, blanks dropped (an unset, empty or ' , ' list is empty).
function Split-List([string]$value) { @(($value -split ',') | ForEach-Object { $_.Trim() } | Where-Object { $_ }) }

# Is $value one of the comma-separated $list (case-insensitive)?
function Test-InList([string]$value, [string]$list) {
    if (-not $value) { return $false }
    return @(Split-List $list | Where-Object { $_ -ieq $value }).Count -gt 0
}

# "acr-dlp-<stage>-<location>-<suffix>", at most 64 characters (ARM's limit). The location is part of it: a
# subscription deployment of the same name in another location is refused.
function Get-DeploymentName([string]$stage, [string]$suffix) {
    $name = "acr-dlp-$stage-$("$env:AZURE_LOCATION".ToLowerInvariant())-$suffix"
    if ($name.Length -gt 64) { $name = $name.Substring(0, 64) }
    return $name
}

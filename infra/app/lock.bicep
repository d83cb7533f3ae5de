// Optional CanNotDelete lock on the responder's resource group: deleting the responder (or its identity, which
// orphans its role assignments) then takes a deliberate unlock first. Remove it before `azd down`.
resource deleteLock 'Microsoft.Authorization/locks@2020-05-01' = {
  name: 'acr-dlp-responder-do-not-delete'
  properties: {
    level: 'CanNotDelete'
    notes: 'The ACR DLP responder reverts registry drift. Remove this lock only to decommission it.'
  }
}

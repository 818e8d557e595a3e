-- Argo CD health of an ArmorRefreshPolicy (refresh.armor.dev): Healthy when the operator found
-- it valid (Ready=True), Degraded with the operator's message (the field and the fix) otherwise.
local hs = { status = "Progressing", message = "Waiting for the operator to validate the policy" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the operator to validate generation " .. obj.metadata.generation
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
      hs.message = c.message or ""
    else
      hs.status = "Degraded"
      hs.message = c.message or c.reason or "the policy is not ready"
    end
    return hs
  end
end
return hs

defmodule Symbiont.MeshTest do
  use Symbiont.MeshCases, adapter: Symbiont.Mesh.PG

  doctest Symbiont.Mesh
  doctest Symbiont.Mesh.Admission
end

defmodule Symbiont.Host.LaunchTest do
  # The environment a host's process starts with (docs/SECURITY.md): ours, then :env, on
  # top of what :inherit_env lets through of the BEAM's; the rest unset. No process
  # needed.
  use ExUnit.Case, async: true

  alias Symbiont.Host.Launch

  doctest Launch

  defp config(opts) do
    Map.merge(%{python_path: [], env: [], inherit_env: ["PATH"]}, Map.new(opts))
  end

  defp env(opts), do: Map.new(Launch.environment(config(opts)))

  test "Symbiont's own variables, with :python_path after Symbiont's Python sources" do
    env = env(python_path: ["/a", "/b"])
    src = Symbiont.Config.python_src()
    assert env[~c"PYTHONPATH"] == String.to_charlist("#{src}:/a:/b")
    assert env[~c"PYTHONUNBUFFERED"] == ~c"1"
    assert env[~c"PYTHONDONTWRITEBYTECODE"] == ~c"1"
  end

  test ":env on top, and kept even when not inherited" do
    env = env(env: [{"SYMBIONT_LAUNCH_TEST", "x"}], inherit_env: [])
    assert env[~c"SYMBIONT_LAUNCH_TEST"] == ~c"x"
  end

  test "what :inherit_env does not name is unset; what it names is left as it is" do
    assert System.get_env("PATH")
    env = env(inherit_env: ["PATH"])
    refute Map.has_key?(env, ~c"PATH")

    ours = [~c"PYTHONPATH", ~c"PYTHONUNBUFFERED", ~c"PYTHONDONTWRITEBYTECODE"]
    assert Enum.all?(env, fn {name, value} -> name in ours or value == false end)
    if System.get_env("HOME"), do: assert(env[~c"HOME"] == false)

    env = env(inherit_env: [])
    assert env[~c"PATH"] == false
  end

  test "a name ending in * is a prefix, and * alone inherits everything" do
    assert Launch.inherited?("LC_ALL", ["LC_*"])
    refute Launch.inherited?("XLC_ALL", ["LC_*"])
    refute Launch.inherited?("LC", ["LC_*"])
    assert Launch.inherited?("ANYTHING", ["*"])
    refute Launch.inherited?("PATHX", ["PATH"])

    env = env(inherit_env: ["*"])
    assert Enum.all?(env, fn {_name, value} -> value != false end)
  end
end

defmodule Symbiont.EmbeddedAppTest do
  # examples/embedded: an application of its own with Symbiont as a `path:` dependency
  # and two instances in its supervision tree, built and run as a user would.
  use ExUnit.Case, async: true

  @app Path.expand("../../examples/embedded", __DIR__)

  test "Symbiont runs inside another application's tree, two instances side by side" do
    {:ok, python} = Symbiont.Config.python_executable()

    {out, status} =
      System.cmd("timeout", ["180", "mix", "run", "check.exs"],
        cd: @app,
        env: [{"MIX_ENV", "dev"}, {"SYMBIONT_PYTHON", python}],
        stderr_to_stdout: true
      )

    assert status == 0, out
    # 3 * 2 + 5 * 1, priced by Embedded.Orders' agent and billed by Embedded.Billing's.
    assert out =~ ~s(billed: {:ok, %{"billed" => 11, "id" => 1}}), out
    assert out =~ "instances: [Embedded.Billing, Embedded.Orders]", out
    # Only what the app asked for runs: none of Symbiont's demo agents.
    assert out =~ ~s(agents: [{"billing", Embedded.Billing}, {"orders", Embedded.Orders}]), out
  end
end

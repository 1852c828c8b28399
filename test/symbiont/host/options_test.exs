defmodule Symbiont.Host.OptionsTest do
  # A host's options validated at the edge, without starting one: defaults, and errors
  # that name the option, the value and what is allowed.
  use ExUnit.Case, async: true

  alias Symbiont.Host.Options

  doctest Options

  defp error(opts) do
    assert {:error, %ArgumentError{message: message}} = Options.validate(opts)
    message
  end

  test "the defaults of the options the application env does not set" do
    assert {:ok, config} = Options.validate([])
    assert config.call_timeout == 5_000
    assert config.start_timeout == 10_000
    assert config.max_frame == 64 * 1024 * 1024
    assert config.backoff_max == 5_000
    assert config.log_lines == 20
    assert config.grace == 2_000
    assert config.env == []
    assert "python-" <> n = config.name
    assert String.to_integer(n) > 0
  end

  test "Symbiont.Host.validate_options/1 is the same validation" do
    assert Symbiont.Host.validate_options(grace: 0) == Options.validate(grace: 0)
    assert {:ok, %{name: "same"}} = Symbiont.Host.validate_options(name: "same")
  end

  test "an unknown option is named, with the allowed ones" do
    message = error(bogus: 1)
    assert message =~ "unknown option :bogus, allowed: ["
    assert message =~ ":call_timeout"
    assert message =~ ":inherit_env"
  end

  describe ":name" do
    test "a string or an atom, kept as given in :opts" do
      assert {:ok, %{name: "a-host", opts: opts}} = Options.validate(name: :"a-host")
      assert opts[:name] == "a-host"
    end

    test "1 to 128 printable bytes" do
      assert error(name: "") == ~s(expected :name to be a string of 1 to 128 bytes, got: "")

      assert error(name: String.duplicate("a", 129)) =~
               "expected :name to be a string of 1 to 128 bytes"

      assert {:ok, _} = Options.validate(name: String.duplicate("a", 128))
      assert error(name: "a\0b") == "expected :name to be printable, got: <<97, 0, 98>>"
      assert error(name: 42) == "expected :name to be a string of 1 to 128 bytes, got: 42"
    end
  end

  describe "numbers" do
    test "a time is a positive integer of milliseconds" do
      for key <- [:call_timeout, :start_timeout, :backoff_max, :grace, :heartbeat_ms] do
        assert error([{key, 0}]) ==
                 "expected #{inspect(key)} to be a positive integer (milliseconds), got: 0"

        assert error([{key, 1.5}]) =~ "to be a positive integer (milliseconds), got: 1.5"
      end
    end

    test "a time is at most what a timer takes" do
      max = Options.max_ms()
      assert {:ok, %{call_timeout: ^max}} = Options.validate(call_timeout: max)

      assert error(call_timeout: max + 1) ==
               "expected :call_timeout to be at most #{max} milliseconds (what a timer takes), got: #{max + 1}"
    end

    test "sizes and counts say their unit, and have no upper bound" do
      assert error(max_frame: -1) ==
               "expected :max_frame to be a positive integer (bytes), got: -1"

      assert error(log_lines: 0) == "expected :log_lines to be a positive integer, got: 0"

      assert error(max_mailbox: :many) ==
               "expected :max_mailbox to be a positive integer (messages), got: :many"

      assert error(isolate_after: 0) ==
               "expected :isolate_after to be a positive integer (crashes), got: 0"

      assert {:ok, %{max_frame: 0x1_0000_0000}} = Options.validate(max_frame: 0x1_0000_0000)
    end
  end

  describe ":python" do
    test "an existing executable" do
      assert error(python: "/nonexistent/python") ==
               ~s(expected :python to be an existing executable, got: "/nonexistent/python")
    end
  end

  describe ":cd and :python_path" do
    @tag :tmp_dir
    test "relative paths resolved against :cd", %{tmp_dir: dir} do
      assert {:ok, config} = Options.validate(cd: dir, python_path: ["agents", "/abs"])
      assert config.cd == dir
      assert config.python_path == [Path.join(dir, "agents"), "/abs"]
    end

    test "an existing directory" do
      assert error(cd: "/nonexistent/dir") ==
               ~s(expected :cd to be an existing directory, got: "/nonexistent/dir")

      assert error(cd: 1) == "expected :cd to be a directory path, got: 1"
    end

    test ":python_path is a list of strings" do
      assert error(python_path: "agents") ==
               ~s(expected :python_path to be a list of strings, got: "agents")

      assert error(python_path: [:agents]) ==
               "expected :python_path to be a list of strings, got: [:agents]"
    end
  end

  describe ":env and :inherit_env" do
    test ":env is {name, value} strings, no = in a name, no NUL byte" do
      assert {:ok, %{env: [{"A", "1"}]}} = Options.validate(env: [{"A", "1"}])
      assert error(env: [{"A=B", "c"}]) =~ ~s(got: [{"A=B", "c"}])
      assert error(env: [{"A", "b\0"}]) =~ "no NUL byte"
      assert error(env: [a: "b"]) =~ "expected :env to be a list of {name, value} strings"
      assert error(env: %{}) == "expected :env to be a list of {name, value} strings, got: %{}"
    end

    test ":inherit_env is variable names, a trailing * a prefix" do
      assert {:ok, %{inherit_env: ["PATH", "LC_*", "*"]}} =
               Options.validate(inherit_env: ["PATH", "LC_*", "*"])

      assert error(inherit_env: ["PATH", "A B"]) ==
               ~s{expected :inherit_env to be a list of variable names (a trailing * matches a prefix), got: ["A B"] in ["PATH", "A B"]}

      assert error(inherit_env: ["*X"]) =~ ~s(got: ["*X"])
      assert error(inherit_env: "PATH") =~ ~s[prefix), got: "PATH"]
    end
  end

  test ":output_limit is validated by Symbiont.Host.Output" do
    assert error(output_limit: [lines_per_s: 0]) =~ "lines_per_s"
  end
end

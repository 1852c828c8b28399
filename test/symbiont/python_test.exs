defmodule Symbiont.PythonTest do
  # Real Python hosts over real ports: the ErlPort-style API end to end.
  use ExUnit.Case, async: true

  import Bitwise
  import Symbiont.HostHelpers

  alias Symbiont.Python

  setup do
    {:ok, host: start_host!()}
  end

  test "payloads over the frame limit are refused both ways with a clear error; the host stays" do
    %{name: py, os_pid: os_pid} = start_host!(max_frame: 1_048_576)
    huge = :binary.copy("x", 2_000_000)

    assert {:error, {:frame_too_large, size, 1_048_576}} =
             Python.call(py, "hostile", "echo", [huge])

    assert size > 2_000_000

    assert {:error, %Python.Error{type: "symbiont.FrameTooLarge", message: message}} =
             Python.call(py, "hostile", "big", [2_000_000])

    assert message =~
             ~r"the reply of hostile.big is 200\d{4} bytes, over the owner's max_frame of 1048576"

    assert {:ok, ^os_pid} = Python.call(py, "hostile", "os_pid", [])
    assert {:ok, %{crashes: 0}} = Symbiont.Host.info(py)
  end

  test "a host gets the allowed part of the BEAM's environment, what Symbiont sets and :env" do
    secret = "TEST_LEAK_#{System.unique_integer([:positive])}"
    System.put_env(secret, "from the BEAM")
    on_exit(fn -> System.delete_env(secret) end)

    %{name: py} = start_host!(env: [{"EXTRA", "mine"}])
    assert {:ok, env} = Python.call(py, "os", "environ.copy", [])
    refute Map.has_key?(env, secret)
    assert env["EXTRA"] == "mine"
    assert env["PATH"] == System.get_env("PATH")
    assert env["PYTHONUNBUFFERED"] == "1"

    allowed =
      ~w(PATH HOME LANG TZ TMPDIR EXTRA PYTHONPATH PYTHONUNBUFFERED PYTHONDONTWRITEBYTECODE)

    others = Enum.reject(Map.keys(env), &(&1 in allowed or &1 =~ ~r/\A(LC|SYMBIONT)_/))
    assert others == []

    %{name: py} = start_host!(inherit_env: ["PATH", "TEST_LEAK_*"])
    assert {:ok, "from the BEAM"} = Python.call(py, "os", "getenv", [secret])
    assert {:ok, nil} = Python.call(py, "os", "getenv", ["HOME"])
  end

  test "bad :inherit_env and :env are refused with the value and what is allowed" do
    assert {:error, %ArgumentError{message: message}} =
             Symbiont.Host.validate_options(inherit_env: ["PATH", "LC_*", "A B"])

    assert message ==
             ~s|expected :inherit_env to be a list of variable names (a trailing * matches a prefix), got: ["A B"] in ["PATH", "LC_*", "A B"]|

    assert {:error, %ArgumentError{message: message}} =
             Symbiont.Host.validate_options(env: [{"A=B", "c"}])

    assert message =~ ~s|no "=" in a name, no NUL byte), got: [{"A=B", "c"}]|
  end

  test "calls any importable function", %{host: %{name: py}} do
    assert {:ok, 3.0} = Python.call(py, "math", "sqrt", [9])
    assert {:ok, "/tmp/x"} = Python.call(py, "os.path", "join", ["/tmp", "x"])
    assert {:ok, true} = Python.call(py, :"os.path", :isabs, ["/tmp"])
    assert "/tmp/x" == Python.call!(py, "os.path", "join", ["/tmp", "x"])
  end

  test "terms survive a round trip through Python", %{host: %{name: py}} do
    ref = make_ref()

    value = %{
      "atoms" => [:ok, :error, nil, true, false],
      "tuple" => {:ok, {1, [2, 3]}, "three"},
      "pid" => self(),
      "ref" => ref,
      "unicode" => "héllo ✓",
      "binary" => <<0, 255, 1>>,
      "numbers" => [0, -1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, 1.5, -0.25],
      {:tuple, "key"} => %{1 => 2}
    }

    assert {:ok, ^value} = Python.call(py, "hostile", "echo", [value])
  end

  test "a Python exception is an error with type, message and traceback; the host keeps serving",
       %{host: %{name: py, os_pid: os_pid}} do
    assert {:error, %Python.Error{type: "ValueError", message: "no good", traceback: tb} = error} =
             Python.call(py, "hostile", "boom", ["no good"])

    assert tb =~ "hostile.py"
    assert tb =~ "in boom"
    assert Exception.message(error) =~ "ValueError: no good"
    assert {:ok, ^os_pid} = Python.call(py, "hostile", "os_pid", [])

    assert_raise Python.Error, ~r/ValueError: again/, fn ->
      Python.call!(py, "hostile", "boom", ["again"])
    end
  end

  test "unknown modules and functions are errors", %{host: %{name: py}} do
    assert {:error, %Python.Error{type: "ModuleNotFoundError"}} =
             Python.call(py, "no_such_module", "f", [])

    assert {:error, %Python.Error{type: "AttributeError"}} =
             Python.call(py, "math", "no_such_function", [])
  end

  test "arguments that cannot be encoded are refused before anything is sent", %{
    host: %{name: py}
  } do
    assert {:error, {:unencodable, _}} = Python.call(py, "hostile", "echo", [%URI{}])
    assert {:ok, 1} = Python.call(py, "hostile", "echo", [1])
  end

  test "arguments are encoded by the caller, not by the instance's owner", %{
    host: %{name: py, pid: owner}
  } do
    # With the owner stopped, a call that cannot be encoded still answers at once: the
    # encoding (of megabytes, for the conductor) never holds up the owner's process.
    :ok = :sys.suspend(owner)

    try do
      assert {:error, {:unencodable, _}} = Python.call(py, "hostile", "echo", [%URI{}])
    after
      :ok = :sys.resume(owner)
    end

    big = :binary.copy("x", 100_000)
    assert {:ok, ^big} = Python.call(py, "hostile", "echo", [big])
  end

  test "a timed-out call is cancelled in Python", %{host: %{name: py, os_pid: os_pid}} do
    assert {:error, :timeout} = Python.call(py, "hostile", "sleep", [30], timeout: 100)
    # The sleep was interrupted: the host answers at once, and it is the same process.
    assert {:ok, ^os_pid} = Python.call(py, "hostile", "os_pid", [], timeout: 2_000)
  end

  test "an async def function is awaited, and a timed-out call cancels its task",
       %{host: %{name: py, os_pid: os_pid}} do
    assert {:ok, [1, "two"]} = Python.call(py, "hostile", "async_echo", [[1, "two"]])
    assert {:ok, nil} = Python.call(py, "hostile", "tell_cancels_to", [self()])
    assert {:error, :timeout} = Python.call(py, "hostile", "async_sleep", [30], timeout: 100)
    assert_receive "cancelled", 5_000
    assert {:ok, ^os_pid} = Python.call(py, "hostile", "os_pid", [], timeout: 2_000)
  end

  test "a late reply is dropped, never delivered to the next caller", %{host: %{name: py}} do
    # Imported first: the cancel of the timeout finds `stubborn` running, not importing.
    assert {:ok, "warm"} = Python.call(py, "hostile", "echo", ["warm"])
    assert {:error, :timeout} = Python.call(py, "hostile", "stubborn", [0.3], timeout: 50)
    # `stubborn` ignores the cancellation and replies "late" while this call waits.
    assert {:ok, "next"} = Python.call(py, "hostile", "echo", ["next"], timeout: 5_000)
  end

  test "Python calls Erlang and Elixir functions", %{host: %{name: py}} do
    assert {:ok, 6} = Python.call(py, "hostile", "erlang_call", ["Enum", "sum", [[1, 2, 3]]])

    assert {:ok, 6} =
             Python.call(py, "hostile", "erlang_call", ["Elixir.Enum", "sum", [[1, 2, 3]]])

    assert {:ok, {:ok, 3}} =
             Python.call(py, "hostile", "erlang_call", ["erlang", "list_to_tuple", [[:ok, 3]]])

    assert {:error, %Python.Error{type: "symbiont.ErlangError", message: msg}} =
             Python.call(py, "hostile", "erlang_call", ["erlang", "error", [:badarg]])

    assert msg =~ "(ArgumentError) argument error"

    assert {:error, %Python.Error{message: msg}} =
             Python.call(py, "hostile", "erlang_call", ["NoSuchModuleAnywhere", "f", []])

    assert msg =~ "unknown module"
  end

  test "calls nest: Elixir -> Python -> Elixir -> Python on the same host", %{host: %{name: py}} do
    assert {:ok, "bottom"} = Python.call(py, "hostile", "nested", [py, 3], timeout: 10_000)
  end

  test "Python sends messages to pids and registered names", %{host: %{name: py}} do
    assert {:ok, nil} = Python.call(py, "hostile", "notify", [self(), {:hello, "from python"}])
    assert_receive {:hello, "from python"}

    name = :"symbiont_test_#{System.unique_integer([:positive])}"
    Process.register(self(), name)
    assert {:ok, nil} = Python.call(py, "hostile", "notify", [name, :by_name])
    assert_receive :by_name
  end

  test "cast runs without a reply, in both directions", %{host: %{name: py}} do
    assert :ok = Python.cast(py, "hostile", "cast_back", [self(), :cast_done])
    assert_receive :cast_done, 5_000
  end

  test "send reaches the Python message handler", %{host: %{name: py}} do
    assert {:ok, nil} = Python.call(py, "hostile", "install_echo_handler", [self()])
    assert :ok = Python.send(py, {:ping, 1})
    assert_receive {"echoed", {:ping, 1}}, 5_000
  end

  test "start/1 validates options and names the field" do
    assert {:error, %ArgumentError{message: msg}} = Python.start(call_timeout: :soon)
    assert msg == "expected :call_timeout to be a positive integer (milliseconds), got: :soon"

    assert {:error, %ArgumentError{message: msg}} = Python.start(colour: :blue)
    assert msg =~ "unknown option :colour"

    assert {:error, %ArgumentError{message: msg}} = Python.start(python: "/no/such/python")
    assert msg =~ ~s(expected :python to be an existing executable, got: "/no/such/python")
  end

  test "a :timeout no timer takes is refused, from Elixir and from Python; the owner stays up (it crashed)",
       %{host: %{name: py, pid: owner}} do
    for {timeout, message} <- [
          {-5, "expected :timeout to be a positive integer (milliseconds), got: -5"},
          {1 <<< 40,
           "expected :timeout to be at most 4294962295 milliseconds (what a timer takes), got: #{1 <<< 40}"}
        ] do
      assert_raise ArgumentError, message, fn ->
        Python.call(py, "os", "getpid", [], timeout: timeout)
      end

      # symbiont.erlang.call("Symbiont.Python", "call", ...) from Python: an error reply.
      args = ["Elixir.Symbiont.Python", "call", [py, "os", "getpid", [], [timeout: timeout]]]

      assert {:error, %Python.Error{message: text}} =
               Python.call(py, "hostile", "erlang_call", args)

      assert text == "error: ** (ArgumentError) " <> message
    end

    assert Symbiont.Host.whereis(py) == owner
    assert {:ok, %{crashes: 0}} = Symbiont.Host.info(py)

    assert {:error, %ArgumentError{message: msg}} = Python.start(call_timeout: 1 <<< 32)
    assert msg =~ "expected :call_timeout to be at most 4294962295 milliseconds"

    assert {:error, %Symbiont.Error{reason: :invalid, message: msg}} =
             Symbiont.Agent.validate_spec(name: "a", python: "m:C", handler_timeout: 1 <<< 32)

    assert msg =~ ~s(agent "a": expected :handler_timeout to be at most 4294962295 milliseconds)
  end

  test "start/1 and stop/1 under Symbiont.Hosts" do
    name = unique_name("started")
    attach_host_events(name)
    assert {:ok, pid} = Python.start(name: name)
    assert {:ok, 2.0} = Python.call(name, "math", "sqrt", [4])
    assert_receive {:host_start, ^name, %{os_pid: os_pid}}
    assert :ok = Python.stop(pid)
    assert wait_until(fn -> not os_alive?(os_pid) end, 5_000)
    assert {:error, {:no_host, ^name}} = Python.call(name, "math", "sqrt", [4])
  end
end

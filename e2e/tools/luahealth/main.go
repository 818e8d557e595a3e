// luahealth runs Argo CD resource health checks (resource_customizations/<group>/<kind>/health.lua)
// against their health_test.yaml the way Argo CD does: gopher-lua with the base, table, string and
// math libraries, the object as the global `obj`, and a table {status, message} as the result.
//
// Usage: luahealth <resource_customizations dir>
// Exits 1 when any expectation fails or a health.lua has no tests.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type testCase struct {
	HealthStatus healthStatus `json:"healthStatus"`
	InputPath    string       `json:"inputPath"`
}

type testFile struct {
	Tests []testCase `json:"tests"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: luahealth <resource_customizations dir>")
		os.Exit(2)
	}
	var scripts []string
	err := filepath.WalkDir(os.Args[1], func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "health.lua" {
			scripts = append(scripts, path)
		}
		return err
	})
	if err != nil {
		fail("walking %s: %v", os.Args[1], err)
	}
	if len(scripts) == 0 {
		fail("no health.lua under %s", os.Args[1])
	}
	sort.Strings(scripts)
	failures, total := 0, 0
	for _, script := range scripts {
		dir := filepath.Dir(script)
		source, err := os.ReadFile(script)
		if err != nil {
			fail("%v", err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
		if err != nil {
			fail("%s has no health_test.yaml: %v", dir, err)
		}
		var tests testFile
		if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
			fail("%s/health_test.yaml: %v", dir, err)
		}
		if len(tests.Tests) == 0 {
			fail("%s/health_test.yaml lists no tests", dir)
		}
		for _, tc := range tests.Tests {
			total++
			got, err := run(string(source), filepath.Join(dir, tc.InputPath))
			switch {
			case err != nil:
				failures++
				fmt.Printf("FAIL %s %s: %v\n", dir, tc.InputPath, err)
			case got != tc.HealthStatus:
				failures++
				fmt.Printf("FAIL %s %s: got %+v, want %+v\n", dir, tc.InputPath, got, tc.HealthStatus)
			default:
				fmt.Printf("ok   %s %s: %s %q\n", dir, tc.InputPath, got.Status, got.Message)
			}
		}
	}
	fmt.Printf("%d of %d health checks passed\n", total-failures, total)
	if failures > 0 {
		os.Exit(1)
	}
}

func run(source, inputPath string) (healthStatus, error) {
	raw, err := os.ReadFile(inputPath)
	if err != nil {
		return healthStatus{}, err
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return healthStatus{}, fmt.Errorf("%s: %w", inputPath, err)
	}
	// The libraries Argo CD opens for health scripts (util/lua in argo-cd).
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(source); err != nil {
		return healthStatus{}, err
	}
	result, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return healthStatus{}, fmt.Errorf("health.lua returned %s, not a table", L.Get(-1).Type())
	}
	status := healthStatus{Status: lua.LVAsString(result.RawGetString("status")), Message: lua.LVAsString(result.RawGetString("message"))}
	switch status.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return status, fmt.Errorf("status %q is not an Argo CD health status", status.Status)
	}
	return status, nil
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := L.NewTable()
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]any:
		t := L.NewTable()
		for k, item := range v {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "luahealth: "+format+"\n", args...)
	os.Exit(1)
}

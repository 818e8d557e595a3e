// promcheck reads what armor-refresh exposes and ships with Prometheus's own code:
//
//	promcheck exposition CONTENT-TYPE < body   parses a /metrics body with the parser a
//	    Prometheus scrape picks for that Content-Type, and prints "family NAME TYPE" for
//	    each metric family and "series NAME" for each sample.
//	promcheck queries FILE...                  parses every "expr" of Grafana dashboard
//	    JSON files as PromQL and prints the metric names they select, one per line.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: promcheck exposition CONTENT-TYPE < body | promcheck queries FILE...")
	}
	var err error
	switch os.Args[1] {
	case "exposition":
		err = exposition(os.Args[2])
	case "queries":
		err = queries(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "promcheck:", msg)
	os.Exit(1)
}

func exposition(contentType string) error {
	body, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	p, err := textparse.New(body, contentType, labels.NewSymbolTable(), textparse.ParserOptions{})
	if p == nil {
		return fmt.Errorf("no parser for Content-Type %q: %v", contentType, err)
	}
	if err != nil {
		// Prometheus falls back and warns: a wrong Content-Type is an error here.
		return fmt.Errorf("Content-Type %q: %v", contentType, err)
	}
	var l labels.Labels
	for {
		e, err := p.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch e {
		case textparse.EntryType:
			name, typ := p.Type()
			fmt.Printf("family %s %s\n", name, typ)
		case textparse.EntrySeries:
			p.Labels(&l)
			fmt.Printf("series %s\n", l.Get(labels.MetricName))
		}
	}
}

// Grafana's variables, replaced by values of the same kind so the PromQL parses.
var variables = regexp.MustCompile(`\$(__rate_interval|__interval|__range)|\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?`)

func substitute(expr string) string {
	return variables.ReplaceAllStringFunc(expr, func(v string) string {
		switch v {
		case "$__rate_interval", "$__interval", "$__range":
			return "5m"
		}
		return "x"
	})
}

func queries(files []string) error {
	names := map[string]bool{}
	p := parser.NewParser(parser.Options{})
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			return fmt.Errorf("%s: %v", f, err)
		}
		var exprs []string
		collect(doc, &exprs)
		if len(exprs) == 0 {
			return fmt.Errorf("%s: no expr", f)
		}
		for _, q := range exprs {
			expr, err := p.ParseExpr(substitute(q))
			if err != nil {
				return fmt.Errorf("%s: %q: %v", f, q, err)
			}
			found := false
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
					names[vs.Name] = true
					found = true
				}
				return nil
			})
			if !found {
				return fmt.Errorf("%s: %q selects no metric by name", f, q)
			}
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		fmt.Println(n)
	}
	return nil
}

func collect(v any, out *[]string) {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && k == "expr" {
				*out = append(*out, s)
			} else {
				collect(x, out)
			}
		}
	case []any:
		for _, x := range t {
			collect(x, out)
		}
	}
}
